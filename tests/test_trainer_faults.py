"""The trainer under faults (issue 12, cases 6 and 7; case 5 is in
test_data_service.py, beside its servers).

Each runs the real command (`python -m posternet.train`) on tiny synthetic
records, where the exit code, the one-line error and the absence of a
traceback are what the user sees.
"""

import json
import os
import subprocess
import threading

import bad_inputs
import record_fixtures

SIZE = 16
TRAIN_FLAGS = ('--model=small_cnn', f'--image_size={SIZE}', '--batch_size=8',
               '--epochs=2', '--verbose=2', '--log_every_steps=0',
               '--dashboard_every_epochs=0', '--precision=float32')
TIMEOUT_S = 240


def _train(run_module, records_dir, logdir, *flags, **kwargs):
  return run_module('posternet.train', f'--records={records_dir}',
                    f'--logdir={logdir}', *TRAIN_FLAGS, *flags, **kwargs)


def _one_line_error(result) -> str:
  """The error line of a command that failed as a user error should."""
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, errors
  assert result.stderr.strip().splitlines()[-1] == errors[0]
  return errors[0]


def test_undecodable_record_names_its_shard_and_id(make_records, run_module,
                                                   tmp_path):
  """Case 6: a record with a valid CRC whose JPEG does not decode.

  In the val split, which every epoch reads whole (a training epoch is
  not a pass: the shuffle draws from repeated shards).
  """
  manifest = make_records('damaged', num_train=32, num_val=8,
                          image_hw=(SIZE, SIZE))
  shard, record, poster_id = record_fixtures.replace_image(
      manifest, 'val', 5, bad_inputs.truncated_jpeg())
  result = _train(run_module, manifest.records_dir, tmp_path,
                  timeout=TIMEOUT_S)
  error = _one_line_error(result)
  assert error.startswith(
      f'error: a damaged record in {manifest.records_dir}: {shard} record '
      f'{record}: Id {poster_id}: the image does not decode ('), error
  assert error.endswith('skip damaged records with ignore_errors')


def _export_dir_turns_into_a_file(process, folder) -> str:
  """Once training has started, puts a file where the export's folder is.

  The export is checked (and its parent made) before training; this makes
  it fail after training. Returns the command's output (stderr merged).
  """
  timer = threading.Timer(TIMEOUT_S, process.kill)
  timer.start()
  output = []
  try:
    for line in process.stdout:
      output.append(line)
      if ' parameters, posters of ' in line:  # logged after the checks
        os.rmdir(folder)  # made by the check, empty
        with open(folder, 'w') as f:
          f.write('not a folder\n')
    process.wait()
  finally:
    timer.cancel()
  return ''.join(output)


def test_export_dir_checked_first_and_a_failed_export_redone(
    make_records, run_module, tmp_path):
  """Case 7: no training for an export that cannot be written; a finished
  training whose export failed is exported by the same command again."""
  records_dir = make_records('export', num_train=32, num_val=16,
                             image_hw=(SIZE, SIZE)).records_dir
  logdir = tmp_path / 'runs'
  blocker = tmp_path / 'blocker'
  blocker.write_text('a file, not a folder\n')
  early = _train(run_module, records_dir, logdir, '--run_name=early',
                 f'--export_dir={blocker / "export"}', timeout=TIMEOUT_S)
  assert _one_line_error(early) == (
      f'error: cannot write the export to {blocker / "export"}: cannot make '
      f'{blocker / "export.tmp"} ({blocker} is not a directory); give '
      'another '
      '--export_dir (or --export_dir= for none)')
  assert sorted(os.listdir(logdir / 'early')) == ['config.json', 'flags.txt']

  folder = tmp_path / 'out'
  export_dir = folder / 'export'
  flags = ('--run_name=late', f'--export_dir={export_dir}')
  process = _train(run_module, records_dir, logdir, *flags, start=True,
                   stderr=subprocess.STDOUT)
  output = _export_dir_turns_into_a_file(process, folder)
  assert process.returncode == 2 and 'Traceback' not in output, output[-3000:]
  assert output.strip().splitlines()[-1] == (
      f'error: cannot write the export to {export_dir}: cannot make '
      f'{folder / "export.tmp"} ({folder} is not a directory); give '
      'another --export_dir '
      '(or --export_dir= for none); the training is kept: start the same '
      'command again to export without training again')
  run_dir = logdir / 'late'
  assert not (run_dir / 'summary.json').exists()
  assert (run_dir / 'backup').is_dir()

  os.remove(folder)
  again = _train(run_module, records_dir, logdir, *flags, timeout=TIMEOUT_S)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'all 2 epochs were trained before' in again.stderr
  summary = json.loads((run_dir / 'summary.json').read_text())
  assert summary['resumed_from_epoch'] == 2 and summary['steps'] == 2 * 4
  assert (export_dir / 'saved_model').is_dir()
  history = (run_dir / 'history.csv').read_text().splitlines()
  assert len(history) == 1 + 2  # the header and 2 epochs: nothing retrained
  assert not (run_dir / 'backup').exists()  # finished: a rerun starts over
