"""Tests of tools/prefetch_bench.py, posternet/bench/ and tools/gpu_check.py.

No speed verdicts here: the benchmark's own table checks the targets. These
tests only check that every measurement runs, on real records, in real
processes, and reports numbers of the right type and sign; that --quick,
whose numbers measure nothing, gives no verdict; that --real_size measures
both formats; and that the GPU check runs end to end on this CPU (--tiny).
"""

import json
import os
import re
import subprocess
import sys

from absl import flags
import pytest

from posternet import cli
from posternet.data import records
from posternet.bench import data
from posternet.bench import measures
from posternet.bench import runner
from posternet.bench import summary
from posternet.bench import timing
from posternet.bench import prefetch as prefetch_bench  # pylint: disable=unused-import (flags)

TOP_LEVEL = ('ceiling_images_per_sec', 'pipeline_images_per_sec',
             'seed_loop_images_per_sec', 'keras_dir_images_per_sec',
             'stall_ratio', 'rss_growth')


@pytest.fixture(scope='module')
def bench_records(make_records):
  """A records folder of 48 + 8 posters stored at 80×80 (--quick's size)."""
  return make_records(num_train=48, num_val=8, image_hw=(96, 88),
                      store_size=(80, 80)).records_dir


def _setup(bench_records, tmp_path):
  manifest = records.Manifest.read(bench_records)
  return measures.Setup(
      records=bench_records,
      records_scaled=data.scaled_records(
          manifest, str(tmp_path / 'scaled')),
      images=data.posters_from_records(
          manifest, str(tmp_path / 'posters')),
      image_size=(80, 80), batch_size=8, seconds=0.2, warmup_seconds=0.1,
      precision='float32')


def test_quick_run_reports_every_field(bench_records, tmp_path, run_module):
  # No --out, from a fresh folder: --quick writes its own file there, never
  # bench/bench.json, where a real run's numbers live (issue 21, point 9).
  out = tmp_path / 'bench' / 'quick.json'
  result = run_module('tools.prefetch_bench', '--quick',
                      f'--records={bench_records}',
                      f'--work_dir={tmp_path / "work"}', cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.listdir(tmp_path / 'bench') == ['quick.json']
  assert result.stdout.splitlines()[-1] == 'wrote bench/quick.json'
  # One progress line per variant, counted once each.
  counters = re.findall(r'^\[(\d+)/(\d+), run 1/1\] ', result.stderr, re.M)
  total = int(counters[0][1])
  assert [int(i) for i, _ in counters] == list(range(1, total + 1))
  report = json.loads(out.read_text())
  for key in TOP_LEVEL:
    assert isinstance(report[key], float) and report[key] > 0, key
  names = [row['name'] for row in report['rows']]
  assert len(names) == len(set(names)) == 19
  for row in report['rows']:
    assert row['images_per_sec'] > 0, row['name']
    assert isinstance(row['peak_rss_bytes'], int), row['name']
    assert row['peak_rss_bytes'] > 0, row['name']
    assert row['x_ceiling'] > 0 and row['x_seed_loop'] > 0, row['name']
  assert set(report['epoch_peak_rss_bytes']) == {'jpeg'}
  assert set(report['epoch_peak_rss_bytes']['jpeg']) == {'1x', '4x'}
  # --quick: every variant in this one process, and no verdict.
  assert report['setup']['quick'] and not report['setup']['isolate']
  assert {t['name'] for t in report['targets']} >= {'stall ratio'}
  assert all(t['met'] is None for t in report['targets'])
  # The baselines read the records' own posters, written out as files.
  assert len(os.listdir(tmp_path / 'work' / 'posters-from-records')) == 56
  # The epoch rows cover one full epoch of 48 (then 4 × 48) posters.
  epochs = {row['scale']: row for row in report['rows'] if 'scale' in row}
  assert epochs[1]['images'] == 48 and epochs[4]['images'] == 4 * 48
  # The table on stdout: every row, no verdict, and once why not.
  assert ('| variant | images/s | spread | × ceiling | × tutorial loop |'
          in result.stdout)
  for name in names:
    assert f'| {name} |' in result.stdout
  assert ': met' not in result.stdout and 'MISSED' not in result.stdout
  assert result.stdout.count('smoke test') == 1
  # The same numbers, were they a measurement, get a verdict per target.
  report['setup']['quick'] = False
  report['targets'] = summary.targets(report)
  table = summary.format_table(report)
  assert table.count(': met') + table.count(': MISSED') == 6
  assert 'smoke test' not in table


def test_real_size_mode_measures_both_formats(tmp_path, run_module):
  # The first 30 rows of a 36-poster CSV, as the lead runs it on real ones.
  from posternet.data import synthetic  # pylint: disable=g-import-not-at-top
  csv_path = synthetic.generate(str(tmp_path / 'data'), 36, seed=1,
                                workers=1)
  out = tmp_path / 'real.json'
  result = run_module('tools.prefetch_bench', '--quick', '--real_size',
                      f'--csv={csv_path}',
                      f'--images={tmp_path / "data" / "Images"}',
                      '--num_posters=30', f'--work_dir={tmp_path / "work"}',
                      f'--out={out}', timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  names = {row['name'] for row in report['rows']}
  for record_set in ('raw', 'raw GZIP', 'raw ZLIB'):
    assert f'{record_set}: {measures.PIPELINE_ROW}' in names
    assert f'{record_set}: epoch 1x' in names
  assert measures.STALL_MEMORY_ROW not in names  # seed_cnn: gpu_check
  assert report['raw_pipeline_images_per_sec'] > 0
  assert report['stall_ratio'] is None
  assert set(report['epoch_peak_rss_bytes']) == {'jpeg', 'raw', 'raw GZIP',
                                                 'raw ZLIB'}
  targets = {t['name'] for t in report['targets']}
  assert {'raw pipeline / raw read + parse',
          'raw pipeline / image_dataset_from_directory'} <= targets
  assert 'stall ratio' not in targets
  # Both formats of the same 30 posters, the raw one also compressed; the
  # pipeline at the JPEG records' largest stored poster.
  sets = report['setup']['record_sets']
  jpeg = records.Manifest.read(report['setup']['records'])
  assert jpeg.store_format == 'jpeg' and jpeg.store_size == (96, 80)
  assert tuple(report['setup']['image_size']) == (
      jpeg.stored_size_range('train')[1])
  for name, compression in (('raw', None), ('raw GZIP', 'GZIP'),
                            ('raw ZLIB', 'ZLIB')):
    manifest = records.Manifest.read(sets[name])
    assert (manifest.store_format, manifest.compression) == ('raw',
                                                             compression)
    assert sum(manifest.num_examples(s) for s in records.SPLITS) == 30
  # The baselines read the first 30 posters: copies (the converter refuses
  # links that lead out of --images), byte for byte.
  images_dir = report['setup']['images']
  copies = data.poster_paths(images_dir)
  assert len(copies) == 30
  for copy in copies:
    original = tmp_path / 'data' / 'Images' / os.path.basename(copy)
    assert not os.path.islink(copy)
    assert open(copy, 'rb').read() == original.read_bytes()


def test_repeated_runs_report_the_median_and_spread():
  runs = [[{'name': 'a', 'images_per_sec': rate, 'load_average': 1.0,
            'peak_rss_bytes': rss, 'cpu_ms_per_image': cpu}]
          for rate, rss, cpu in ((300.0, 5, 0.3), (100.0, 9, 0.1),
                                 (200.0, 7, 0.2))]
  (row,) = runner.median_of(runs)
  assert row['images_per_sec'] == 200.0 and row['cpu_ms_per_image'] == 0.2
  assert (row['images_per_sec_min'], row['images_per_sec_max']) == (100.0,
                                                                    300.0)
  assert row['runs_images_per_sec'] == [300.0, 100.0, 200.0]
  assert row['peak_rss_bytes'] == 9


def test_gpu_check_runs_end_to_end_on_this_cpu(tmp_path, repo):
  # No GPU here: --tiny is the script's CPU mode (tiny posters, a blink per
  # row), through the shell script a user runs.
  out = tmp_path / 'gpu.json'
  result = subprocess.run(
      [os.path.join(repo, 'tools', 'gpu_check.sh'), '--tiny',
       f'--work_dir={tmp_path / "work"}', f'--out={out}'],
      capture_output=True, text=True, timeout=400, check=False,
      env={**os.environ, 'PYTHON': sys.executable,
           'TF_CPP_MIN_LOG_LEVEL': '3'})
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  rows = {(row['feed'], row['xla']): row for row in report['training']}
  assert set(rows) == {(feed, xla) for feed in ('memory', 'jpeg', 'raw')
                       for xla in (False, True)}
  for row in rows.values():
    assert row['images_per_sec'] > 0 and row['x_memory'] > 0
    assert row['precision'] == 'mixed_float16'
  assert [row['input'] for row in report['host']] == [
      'decode JPEG from RAM (the ceiling)',
      'posternet pipeline, jpeg records', 'posternet pipeline, raw records']
  assert all(row['images_per_sec'] > 0 for row in report['host'])
  assert '| seed_cnn fed by | XLA | precision |' in result.stdout
  assert 'only show that the check runs' in result.stdout
  # Without a GPU and without --tiny: one line saying so, exit 2.
  refused = subprocess.run(
      [os.path.join(repo, 'tools', 'gpu_check.sh'),
       f'--work_dir={tmp_path / "work"}', f'--out={tmp_path / "no.json"}'],
      capture_output=True, text=True, timeout=120, check=False,
      env={**os.environ, 'PYTHON': sys.executable,
           'TF_CPP_MIN_LOG_LEVEL': '3', 'CUDA_VISIBLE_DEVICES': ''})
  assert refused.returncode == 2, refused.stderr[-2000:]
  assert refused.stderr.strip().splitlines()[-1].startswith(
      'error: no GPU visible')


def test_isolated_variant_runs_in_its_own_process(bench_records, tmp_path):
  setup = _setup(bench_records, tmp_path)
  variant = next(v for v in runner.variants(
      measures.decode_plan(records.Manifest.read(bench_records),
                                 (80, 80)))
                 if v['name'] == measures.PIPELINE_ROW)
  rows = runner.run_isolated(setup, variant)
  assert [row['name'] for row in rows] == [measures.PIPELINE_ROW]
  assert rows[0]['images_per_sec'] > 0
  # A whole Python + TensorFlow process: far above this test's few MB.
  assert rows[0]['peak_rss_bytes'] > 100e6
  assert rows[0]['images'] % 8 == 0  # Counted in whole batches of 8.


def test_time_dataset_counts_every_image(bench_records, tmp_path):
  import tensorflow as tf
  # Batches of 3 and 5 alternate: the count must add real batch sizes.
  dataset = tf.data.Dataset.from_tensor_slices(tf.zeros([8, 2])).batch(
      3).take(1).concatenate(
          tf.data.Dataset.from_tensor_slices(tf.zeros([5, 2])).batch(5)
      ).repeat()
  pull = timing.batch_counter(dataset)
  assert pull(4) == 3 + 5 + 3 + 5
  # The warm-up pulls 1, 2, 4, … batches: 2^k - 1 in all, an odd number, so
  # the timed part starts at a batch of 5 and adds 5, 3, 5, 3, …
  row = timing.time_dataset(dataset, 0.05, 0.05)
  assert row['images'] % 8 in (0, 5) and row['images_per_sec'] > 0


def test_scaled_records_list_every_shard_four_times(bench_records, tmp_path):
  original = records.Manifest.read(bench_records)
  scaled = data.scaled_records(original, str(tmp_path / 'x4'))
  manifest = records.Manifest.read(scaled)
  for split in records.SPLITS:
    assert manifest.num_examples(split) == 4 * original.num_examples(split)
    paths = manifest.shard_paths(split)
    assert len(paths) == 4 * len(original.split_info(split).shards)
    assert all(os.path.exists(path) for path in paths)


def test_synthetic_records_made_once_then_reused(tmp_path):
  made = data.synthetic_records(str(tmp_path), 40, (80, 80))
  records_dir, images_dir = made
  manifest = records.Manifest.read(records_dir)
  assert manifest.store_size == (80, 80)
  assert sum(manifest.num_examples(s) for s in records.SPLITS) == 40
  assert len(data.poster_paths(images_dir)) == 40
  stamp = os.path.getmtime(records.manifest_path(records_dir))
  assert data.synthetic_records(str(tmp_path), 40, (80, 80)) == made
  assert os.path.getmtime(records.manifest_path(records_dir)) == stamp


def test_prepare_rejects_bad_folders(bench_records, make_records, tmp_path):
  with pytest.raises(cli.UserError, match='does not exist'):
    data.prepare(str(tmp_path / 'nope'), None, str(tmp_path), 10,
                           (80, 80))
  with pytest.raises(cli.UserError, match='is not a folder'):
    data.prepare(bench_records, str(tmp_path / 'nope'),
                           str(tmp_path), 10, (80, 80))
  with pytest.raises(cli.UserError, match='give --records too'):
    data.prepare(None, str(tmp_path), str(tmp_path), 10, (80, 80))
  # Raw records have no JPEG ceiling to hold them against: --real_size.
  raw = make_records('raw_bench', num_train=4, num_val=2, store_format='raw')
  with pytest.raises(cli.UserError, match='holds raw records.*--real_size'):
    data.prepare(raw.records_dir, None, str(tmp_path), 10, (80, 80))


def test_bad_flags_are_one_line_errors(tmp_path, run_module):
  result = run_module('tools.prefetch_bench',
                      f'--records={tmp_path / "missing"}', '--quick',
                      f'--work_dir={tmp_path}', f'--out={tmp_path / "b.json"}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'Traceback' not in result.stderr
  assert 'missing' in result.stderr
  assert not (tmp_path / 'b.json').exists()


def test_importing_claims_no_flag_names():
  for name in ('records', 'out', 'image_size', 'seconds', 'quick'):
    assert name not in flags.FLAGS


def test_only_runs_the_variants_it_names():
  plan = {'format': 'jpeg', 'stored_hw': None, 'ratio': 1,
          'decoded_hw': None}
  every = runner.variants(plan)
  chosen = runner.select_variants(every, ['ceiling', runner.HOST_ROW])
  names = [v['name'] for v in chosen]
  assert names == [v['name'] for v in every
                   if 'ceiling' in v['name'] or runner.HOST_ROW in v['name']]
  assert len(names) == 5  # 4 ceilings and the pipeline resizing on the host
  assert chosen[-1]['params'] == {'options': {'pad_to_box': False}}
  assert runner.select_variants(every, []) == every
  with pytest.raises(cli.UserError, match='matches no variant; the '
                     'variants: ceiling'):
    runner.select_variants(every, ['no such row'])
