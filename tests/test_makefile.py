"""Tests of the Makefile's targets as a user runs them (make in a subprocess).

`make demo` trains for a minute or two, so its posters and records are
tested through `make demo-records`, the same rules on a tiny set in a
temporary folder; `make bench` through a dry run (-n).
"""

import os

DEMO_N = '24'


def _demo_records(run_make, tmp_path, *more):
  """`make demo-records` into tmp_path; the finished process."""
  result = run_make('demo-records', f'DEMO_DATA={tmp_path / "data"}',
                    f'DEMO_RECORDS={tmp_path / "records"}',
                    f'DEMO_N={DEMO_N}', *more)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _mtimes(folder):
  """{path: mtime_ns} of every file under folder."""
  return {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
          for root, _, names in os.walk(folder) for name in names}


def test_demo_reuses_up_to_date_posters_and_records(run_make, tmp_path):
  first = _demo_records(run_make, tmp_path)
  assert 'wrote 24 posters' in first.stdout
  assert 'wrote 21 train + 3 val posters' in first.stdout
  data, manifest = _mtimes(tmp_path / 'data'), _mtimes(tmp_path / 'records')
  # The same settings again: nothing is made.
  again = _demo_records(run_make, tmp_path)
  assert again.stdout == '' and again.stderr == ''
  assert _mtimes(tmp_path / 'data') == data
  assert _mtimes(tmp_path / 'records') == manifest
  # Other records settings: the records are made again, the posters kept.
  other = _demo_records(run_make, tmp_path, 'DEMO_STORE_SIZE=16x16')
  assert 'wrote 24 posters' not in other.stdout
  assert 'stored as jpeg: train posters of 16x16' in other.stdout
  assert _mtimes(tmp_path / 'data') == data
  # Incomplete posters (the CSV is written last): made again.
  os.remove(tmp_path / 'data' / 'multi_label_train.csv')
  dry = run_make('demo-records', f'DEMO_DATA={tmp_path / "data"}',
                 f'DEMO_RECORDS={tmp_path / "records"}', f'DEMO_N={DEMO_N}',
                 'DEMO_STORE_SIZE=16x16', '-n')
  assert '-m posternet.synthetic' in dry.stdout
  assert '-m tools.make_records' in dry.stdout


def test_make_demo_trains_again_each_time(run_make):
  dry = run_make('demo', '-n')
  assert dry.returncode == 0, dry.stderr
  train = next(l for l in dry.stdout.splitlines() if 'posternet.train' in l)
  assert train.endswith('--flagfile=configs/demo.cfg --overwrite'), train


def test_make_bench_leaves_the_report_s_name_to_the_benchmark(run_make):
  # So that --quick writes bench/quick.json (tests/test_prefetch_bench.py),
  # never over the bench/bench.json of a measurement.
  for flags in ('--quick', ''):
    dry = run_make('bench', f'BENCH_FLAGS={flags}', '-n')
    assert dry.returncode == 0, dry.stderr
    command = next(l for l in dry.stdout.splitlines()
                   if 'tools.prefetch_bench' in l)
    assert '--out' not in command, command
