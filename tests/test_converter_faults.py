"""The converter under faults and hostile input (issue 12, cases 1-4, 10-13).

One test per case, named after it; BUILD_NOTES.md, "Faults and bad input",
lists them. Real processes where the case is about processes (the lock,
kill -9, Ctrl-C, a FIFO); every wait has a bound: subprocess timeouts, and
time_limit for the tests that run in this process.
"""

import functools
import hashlib
import logging
import os
import pathlib
import signal
import sys
import time

import pytest

import bad_inputs
from posternet import cli
from posternet.data import convert
from posternet.data import csv_rows
from posternet import genres
from posternet.data import records
from posternet.data import staging
from posternet.data import verify
# Helpers and a fixture shared with the converter's other tests.
from test_export_predict import exported  # pylint: disable=unused-import
from test_make_records import _converter
from test_make_records import _slow_dataset
from test_make_records import folder_bytes
from test_make_records import jpeg_set
from test_make_records import write_dataset


def time_limit(seconds: float):
  """Fails a test run in this process when it takes longer than seconds.

  SIGALRM interrupts the main thread's waits (a blocking open() too), so a
  hang becomes a TimeoutError instead of a stuck suite.
  """

  def decorate(test):
    @functools.wraps(test)
    def limited(*args, **kwargs):
      def expire(signum, frame):
        del signum, frame  # unused
        raise TimeoutError(f'{test.__name__} ran past {seconds} s')
      previous = signal.signal(signal.SIGALRM, expire)
      signal.setitimer(signal.ITIMER_REAL, seconds)
      try:
        return test(*args, **kwargs)
      finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return limited

  return decorate


def _wait_for(condition, process, seconds: float = 60) -> None:
  """Polls until condition() holds; fails if the process ends first."""
  deadline = time.monotonic() + seconds
  while not condition():
    assert process.poll() is None, process.communicate()
    assert time.monotonic() < deadline, f'not within {seconds} s'
    time.sleep(0.005)


def _noted_shards(out) -> list:
  """Shards the converter has finished in its staging folder (by notes)."""
  return sorted((out / staging.STATE_DIR).glob('*.tfrecord.json'))


def _finished_set(root) -> tuple:
  """A small finished, verified set in root/out: (out, its files' bytes)."""
  csv_path, image_dir = write_dataset(root / 'old', jpeg_set(6, start=50))
  out = root / 'out'
  convert.convert(csv_path, image_dir, str(out), val_fraction=0.3,
                  progress=False)
  assert verify.verify(str(out)) == []
  return out, folder_bytes(out)


def _stop(process) -> None:
  """Kills a converter a failed test leaves running."""
  if process.poll() is None:
    process.kill()
    process.communicate(timeout=30)


# Slow data: 240 posters that each need a decode, resize and encode
# (--store_size), in 8 + 8 shards, one worker: a few seconds of work, and
# a shard finished every few tenths of a second.
SLOW_FLAGS = ('--store_size=256x256', '--workers=1', '--min_shards=8')


def _slow_run(run_module, data, out):
  csv_path, image_dir = data
  return _converter(run_module, f'--csv={csv_path}', f'--images={image_dir}',
                    f'--out={out}', *SLOW_FLAGS)


# ------------------------------------------------- 1: one converter per --out


def test_case1_second_converter_on_the_same_out_fails_at_once(tmp_path,
                                                             run_module):
  data = _slow_dataset(tmp_path / 'data', 240)
  out = tmp_path / 'out'
  lock = out / staging.LOCK_FILE
  first = second = _slow_run(run_module, data, out)
  try:
    _wait_for(lambda: lock.exists() and lock.read_text().strip() ==
              str(first.pid), first)
    first.send_signal(signal.SIGSTOP)  # holds the lock, costs no CPU
    second = _slow_run(run_module, data, out)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 2, stderr
    assert 'Traceback' not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f'error: {out} is being written by another converter (pid '
        f'{first.pid}); wait for it to finish, or give another --out')
    first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
  finally:
    _stop(first)
    _stop(second)
  assert verify.verify(str(out)) == []
  assert not lock.exists() and not (out / staging.STATE_DIR).exists()


# ------------------------------------ 2: a failing rerun keeps a finished set


@time_limit(60)
def test_case2_failing_rerun_leaves_the_finished_set_as_it_was(tmp_path):
  out, before = _finished_set(tmp_path)
  names = set(os.listdir(out))
  files = {**jpeg_set(12), 'ttbad': bad_inputs.truncated_jpeg()}
  csv_path, image_dir = write_dataset(tmp_path / 'new', files)
  with pytest.raises(cli.UserError, match='ttbad.jpg .*truncated or corrupt'):
    convert.convert(csv_path, image_dir, str(out), min_shards=4,
                    progress=False)
  assert _noted_shards(out)  # the new run had written shards before failing
  assert folder_bytes(out) == before
  assert set(os.listdir(out)) == names | {staging.STATE_DIR}
  assert verify.verify(str(out)) == []


# ---------------------------------- 3: resume checks a shard by its checksum


@time_limit(180)
def test_case3_resume_rewrites_a_finished_shard_whose_bytes_changed(
    tmp_path, run_module, caplog):
  data = _slow_dataset(tmp_path / 'data', 240)
  out = tmp_path / 'out'
  process = _slow_run(run_module, data, out)
  try:
    _wait_for(lambda: _noted_shards(out), process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
  finally:
    _stop(process)
  assert process.returncode == -signal.SIGKILL, 'finished before the kill'
  noted = _noted_shards(out)
  note = noted[0]
  shard = out / staging.STATE_DIR / note.name[:-len('.json')]
  damaged = bytearray(shard.read_bytes())
  damaged[len(damaged) // 2] ^= 0x01  # same length: a length check passes
  shard.write_bytes(bytes(damaged))

  with caplog.at_level(logging.WARNING):
    summary = convert.convert(*data, str(out), store_size=(256, 256),
                              min_shards=8, progress=False)
  assert any(str(shard) in r.getMessage() and 'writing it again' in
             r.getMessage() for r in caplog.records), caplog.text
  manifest = records.Manifest.read(str(out))
  for split in records.SPLITS:
    for info in manifest.split_info(split).shards:
      written = (out / info.file).read_bytes()
      assert hashlib.sha256(written).hexdigest() == info.sha256
  assert summary['shards_reused'] == len(noted) - 1
  assert verify.verify(str(out)) == []


# --------------------------------- 4: a FIFO does not block; Ctrl-C stops it


def test_case4_a_fifo_poster_is_a_bad_image_not_a_hang(tmp_path, run_module):
  csv_path, image_dir = write_dataset(tmp_path, {**jpeg_set(6),
                                                 'ttfifo': None})
  fifo = os.path.join(image_dir, 'ttfifo.jpg')
  os.mkfifo(fifo)  # nobody ever writes to it: opening it would block
  runs = {skip: _converter(run_module, f'--csv={csv_path}',
                           f'--images={image_dir}',
                           f'--out={tmp_path / str(skip)}', '--val_fraction=0.3',
                           *(['--skip_bad_images'] if skip else []))
          for skip in (False, True)}
  try:
    outputs = {skip: run.communicate(timeout=120)
               for skip, run in runs.items()}
  finally:
    for run in runs.values():
      _stop(run)
  stdout, stderr = outputs[False]
  assert runs[False].returncode == 2, stderr
  assert stderr.strip().splitlines()[-1].startswith(
      f'error: {fifo} (line 8, Id ttfifo): not a regular file: a FIFO')
  stdout, stderr = outputs[True]
  assert runs[True].returncode == 0, stderr
  assert 'skipped 1 poster(s): 1 not a regular file' in stdout
  assert verify.verify(str(tmp_path / 'True')) == []


def test_case4_predict_refuses_a_fifo(exported, tmp_path, run_module):
  fifo = tmp_path / 'fifo.jpg'
  os.mkfifo(fifo)
  good = exported['paths']['exact.jpg']
  run = run_module('posternet.predict', f'--model={exported["dir"]}',
                   str(fifo), good, timeout=120)
  assert run.returncode == 2, run.stderr
  assert f'error: {fifo}: a FIFO (named pipe), not a regular file' in (
      run.stderr.splitlines())
  assert run.stdout.splitlines()[0] == good  # the other poster is predicted


def test_case4_ctrl_c_stops_the_converter_promptly(tmp_path, run_module):
  out, before = _finished_set(tmp_path)
  data = _slow_dataset(tmp_path / 'data', 240)
  for moment in ('while TensorFlow loads', 'mid-conversion'):
    process = _slow_run(run_module, data, out)
    try:
      if moment == 'mid-conversion':
        _wait_for(lambda: _noted_shards(out), process)
      else:  # TensorFlow's library is mapped: its import is under way
        _wait_for(lambda: 'tensorflow' in pathlib.Path(
            f'/proc/{process.pid}/maps').read_text(), process)
      process.send_signal(signal.SIGINT)
      sent = time.monotonic()
      _, stderr = process.communicate(timeout=60)
    finally:
      _stop(process)
    assert process.returncode == 130, (moment, stderr)
    assert time.monotonic() - sent < 15, moment
    assert 'Traceback' not in stderr, (moment, stderr)
    assert folder_bytes(out) == before, moment
  assert verify.verify(str(out)) == []
  assert not (out / staging.LOCK_FILE).exists()


# ------------------------------- 10: links out of Images/, odd Ids refused


_OPENED = []  # paths opened by Python code in this process, while watched


def _record_opens(event: str, args: tuple) -> None:
  if event == 'open' and _OPENED and isinstance(args[0], (str, bytes)):
    _OPENED.append(os.fsdecode(args[0]))


@time_limit(60)
def test_case10_links_out_of_images_are_refused_before_opening(tmp_path):
  outside = tmp_path / 'elsewhere.jpg'
  outside.write_bytes(bad_inputs.rgb_jpeg(9))
  csv_path, image_dir = write_dataset(
      tmp_path, {**jpeg_set(8), 'ttpasswd': None, 'ttoutside': None,
                 'ttinside': None},
      extra_files={'spare.bin': bad_inputs.rgb_jpeg(7)})
  os.symlink('/etc/passwd', os.path.join(image_dir, 'ttpasswd.jpg'))
  os.symlink(outside, os.path.join(image_dir, 'ttoutside.jpg'))
  os.symlink('spare.bin', os.path.join(image_dir, 'ttinside.jpg'))
  if not _OPENED:
    sys.addaudithook(_record_opens)  # stays for the session: cheap, idle
  _OPENED[:] = ['(watching)']
  try:
    summary = convert.convert(csv_path, image_dir, str(tmp_path / 'out'),
                              skip_bad_images=True, val_fraction=0.3,
                              progress=False)
    opened = list(_OPENED)
  finally:
    _OPENED.clear()
  assert summary['skipped_by_reason'] == {'outside the images folder': 2}
  assert summary['train'] + summary['val'] == 9  # ttinside is stored
  report = (tmp_path / 'out' / staging.SKIPPED_REPORT).read_text()
  assert 'it leads to /etc/passwd' in report
  assert any(p.endswith('spare.bin') for p in opened)  # the watch works
  assert [p for p in opened if 'passwd' in p or 'elsewhere' in p] == []
  with pytest.raises(cli.UserError, match='ttpasswd.jpg .*outside the images '
                     'folder: it leads to /etc/passwd'):
    convert.convert(csv_path, image_dir, str(tmp_path / 'strict'),
                    val_fraction=0.3, progress=False)

  for odd in ('tt1\nx', 'tt1\rx', 'tt1\tx', 'tt1\x1bx', 'tt1\x7fx'):
    text = '\n'.join([HEADER, _line('tt0', "['Drama']", 'Drama'),
                      _line(f'"{odd}"', "['Drama']", 'Drama')])
    assert f'line 3: Id {odd!r} is not a plain file name' in _error(
        _csv(tmp_path, text))


# --------------------------------------- 11-13: the CSV, checked and named


def _csv(tmp_path, text: str) -> str:
  path = tmp_path / 'train.csv'
  path.write_text(text)
  return str(path)


HEADER = ','.join(genres.CSV_COLUMNS)


def _line(poster_id: str, genre_cell: str, *names: str) -> str:
  cells = ['1' if g in names else '0' for g in genres.GENRES]
  return ','.join([poster_id, genre_cell] + cells)


def _error(csv_path: str) -> str:
  with pytest.raises(cli.UserError) as error:
    csv_rows.read_csv(csv_path)
  message = str(error.value)
  assert message.startswith(csv_path) and '\n' not in message, message
  return message


@time_limit(30)
def test_case11_genre_cell_is_checked_against_the_genre_columns(tmp_path):
  rows = [_line('tt1', '"[\'Comedy\', \'Drama\']"', 'Comedy', 'Drama'),
          _line('tt2', '"[\'Drama\', \'Comedy\']"', 'Comedy', 'Drama'),
          _line('tt3', "['N/A']", 'N/A')]
  table = csv_rows.read_csv(_csv(tmp_path, '\n'.join([HEADER, *rows]) + '\n'))
  assert [genres.names_of(l) for l in table.labels] == [
      ['Comedy', 'Drama'], ['Comedy', 'Drama'], ['N/A']]

  wrong = _line('tt4', "['Comedy']", 'Drama')
  message = _error(_csv(tmp_path, '\n'.join([HEADER, *rows, wrong])))
  assert ("line 5 (Id 'tt4'): Genre \"['Comedy']\" disagrees with the genre "
          'columns, which set Drama; the columns are the labels') in message
  for cell in ('NOT-A-LIST', '', "['Comedy'", '[Comedy]'):
    bad = _line('tt5', f'"{cell}"', 'Comedy')
    message = _error(_csv(tmp_path, '\n'.join([HEADER, bad, *rows])))
    assert f"line 2 (Id 'tt5'): Genre {cell!r} is not a list of genres" in (
        message)


@time_limit(30)
def test_case12_csv_line_numbers_are_physical_lines(tmp_path):
  good = [_line(f'tt{i}', "['Drama']", 'Drama') for i in range(4)]
  multi_line = _line('tt9', '"[\'Comedy\',\n \'Drama\']"', 'Comedy', 'Drama')
  text = '\n'.join([HEADER, good[0], '', good[1], multi_line, '', '',
                    good[2], good[3]]) + '\n'
  table = csv_rows.read_csv(_csv(tmp_path, text))
  assert table.lines == (2, 4, 5, 9, 10)
  assert [table.line_of(row) for row in (0, 3)] == [2, 9]

  bad_label = _line('tt7', "['Drama']", 'Drama').replace(',1,', ',2,')
  text = '\n'.join([HEADER, good[0], '', '', good[1], '', bad_label]) + '\n'
  assert "line 7 (Id 'tt7'): column 'Drama' is '2'" in _error(
      _csv(tmp_path, text))

  unquoted = _line('tt8', "['Comedy', 'Drama']", 'Comedy', 'Drama')
  text = '\n'.join([HEADER, unquoted, *good]) + '\n'
  assert ("line 2 (Id 'tt8'): its Genre list holds commas but is not in "
          'quotes, so the row has 28 cells, not 27') in _error(
              _csv(tmp_path, text))
  short = ','.join(good[1].split(',')[:-1])
  text = '\n'.join([HEADER, good[0], '', short]) + '\n'
  assert "line 4 (Id 'tt1') has 26 cells; the header (line 1) has 27" in (
      _error(_csv(tmp_path, text)))


@time_limit(30)
def test_case13_a_semicolon_separated_csv_is_named_so(tmp_path):
  rows = [_line(f'tt{i}', "['Drama']", 'Drama').replace(',', ';')
          for i in range(3)]
  text = '\n'.join([HEADER.replace(',', ';'), *rows]) + '\n'
  message = _error(_csv(tmp_path, text))
  assert "the file looks ';'-separated" in message
  assert 'missing column' not in message
  tabbed = '\n'.join([HEADER.replace(',', '\t'),
                      *[r.replace(';', '\t') for r in rows]])
  assert 'the file looks tab-separated' in _error(_csv(tmp_path, tabbed))
