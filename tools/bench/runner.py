"""Running the benchmark: every variant, here or each in a fresh process.

Each variant runs in a fresh process (isolate, the default but under
--quick): its peak RSS is its own, and no variant inherits another's threads
or memory. Repeated runs go round-robin, and each row keeps its fastest run.
"""

import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Mapping, Optional, Sequence

from posternet import cli
from posternet import models
from tools.bench import data
from tools.bench import measures
from tools.bench import summary
from tools.bench import timing

# The demo's stored size (configs/demo.cfg): thumbnails a CPU trains on.
DEFAULT_IMAGE_SIZE = (128, 128)
DEFAULT_NUM_POSTERS = 7254  # the tutorial's CSV rows

# --quick's warm-up per variant: a blink (its numbers measure nothing).
QUICK_WARMUP_SECONDS = 0.05


MEASURES = {
    'ceiling': measures.measure_ceiling,
    'pipeline': measures.measure_pipeline,
    'seed_loop': measures.measure_seed_loop,
    'keras_dir': measures.measure_keras_dir,
    'stall': measures.measure_stall,
    'epoch': measures.measure_epoch,
    'service': measures.measure_service,
}


def variants(plan: Mapping, service: bool = False) -> list:
  """Every measurement of one run, in order: {name, kind, params}.

  With service, the full pipeline fed by a local tf.data service with 1 and
  2 worker processes follows the option rows.
  """
  ratio = plan['ratio'] or 'per poster'
  resize = 'no resize' if plan['decoded_hw'] is not None else 'resize if needed'
  out = [{'name': f'ceiling: decode {dct}, per {unit}', 'kind': 'ceiling',
          'params': {'dct_method': dct, 'batched': unit == 'batch'}}
         for dct in measures.DCT_METHODS for unit in ('poster', 'batch')]
  stages = (('read (+ shuffle)', 'read'), ('+ batch + parse', 'parse'),
            (f'+ decode (ratio {ratio}, {resize})', 'decode'),
            (measures.PIPELINE_ROW, 'prefetch'))
  out += [{'name': name, 'kind': 'pipeline',
           'params': {'options': {'stop_after': stage}}}
          for name, stage in stages]
  changes = (('parallel calls 1', {'num_parallel_calls': 1}),
             ('prefetch off', {'prefetch': 0}),
             ('deterministic order', {'deterministic': True}),
             ('cache decoded posters', {'cache': True}))
  out += [{'name': f'pipeline: {name}', 'kind': 'pipeline',
           'params': {'options': options}} for name, options in changes]
  if service:
    out += [{'name': measures.service_row(n), 'kind': 'service',
             'params': {'workers': n}} for n in (1, 2)]
  out += [{'name': measures.SEED_LOOP_ROW, 'kind': 'seed_loop', 'params': {}},
          {'name': measures.KERAS_DIR_ROW, 'kind': 'keras_dir', 'params': {}},
          {'name': 'stall', 'kind': 'stall', 'params': {}}]
  out += [{'name': name, 'kind': 'epoch', 'params': {'scale': scale}}
          for scale, name in measures.EPOCH_ROWS.items()]
  return out


def run_variant(setup: measures.Setup, variant: Mapping) -> list:
  """Runs one variant in this process; its rows, each with a peak RSS."""
  gc.collect()  # Earlier variants' iterators (and their threads) go first.
  load = os.getloadavg()[0]
  timing.reset_peak_rss()
  rows = MEASURES[variant['kind']](setup, **variant['params'])
  peak = timing.peak_rss()
  for row in rows:
    row.setdefault('name', variant['name'])
    row.setdefault('peak_rss_bytes', peak)
    row['load_average'] = load
  return rows


def best_of(runs: Sequence[list]) -> list:
  """Merges repeated runs of the variants: per row, its fastest run.

  Other jobs on a shared machine only ever slow a run down, so the fastest of
  several runs comes closest to what a variant does on free cores. Every
  run's rate and load average are kept beside it; peak RSS is the largest.
  """
  by_name = {}
  for rows in runs:
    for row in rows:
      by_name.setdefault(row['name'], []).append(row)
  merged = []
  for found in by_name.values():
    best = dict(max(found, key=lambda row: row['images_per_sec']))
    best['runs_images_per_sec'] = [row['images_per_sec'] for row in found]
    best['runs_load_average'] = [row['load_average'] for row in found]
    best['peak_rss_bytes'] = max(row['peak_rss_bytes'] for row in found)
    merged.append(best)
  return merged


def run_isolated(setup: measures.Setup, variant: Mapping) -> list:
  """Runs one variant in a fresh Python process (the command's --variant)."""
  with tempfile.TemporaryDirectory(prefix='prefetch_bench_') as folder:
    spec = os.path.join(folder, 'variant.json')
    with open(spec, 'w') as f:
      json.dump({'setup': dataclasses.asdict(setup), 'variant': variant}, f)
    env = dict(os.environ)
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    process = subprocess.run(
        [sys.executable, '-m', 'tools.prefetch_bench', f'--variant={spec}'],
        capture_output=True, text=True, env=env, check=False)
    if process.returncode != 0:
      lines = (process.stderr or process.stdout).strip().splitlines() or ['']
      raise cli.UserError(f'benchmark variant {variant["name"]!r} failed '
                          f'(exit {process.returncode}): {lines[-1]}')
    with open(spec + '.out') as f:
      return json.load(f)


def run_variant_file(spec_path: str) -> None:
  """The child's side of run_isolated: reads the spec, writes its rows."""
  with open(spec_path) as f:
    spec = json.load(f)
  rows = run_variant(measures.Setup.from_json(spec['setup']), spec['variant'])
  with open(spec_path + '.out', 'w') as f:
    json.dump(rows, f)


def run_benchmark(*, out: str, records_dir: Optional[str] = None,
                  images_dir: Optional[str] = None,
                  num_posters: int = DEFAULT_NUM_POSTERS,
                  image_size: Sequence[int] = DEFAULT_IMAGE_SIZE,
                  batch_size: int = 64, seconds: float = 5.0,
                  precision: str = 'auto', work_dir: str = 'bench/work',
                  isolate: bool = True, repeats: int = 1,
                  service: bool = False, quick: bool = False) -> dict:
  """Runs every measurement, writes the JSON report and returns it.

  Args:
    out: the JSON report's path.
    records_dir: records to measure; None: synthetic ones in work_dir.
    images_dir: source posters for the baselines; default: the synthetic
      Images/, or the records' own posters written out as files.
    num_posters: synthetic posters to make (without records_dir).
    image_size: (height, width) of the model-ready batches.
    batch_size: images per batch, for every variant.
    seconds: timed run per variant, after its warm-up.
    precision: the stall rows' Keras policy ('auto': the trainer's choice).
    work_dir: synthetic data, the scaled records, posters written out.
    isolate: each variant in its own process (its own peak RSS).
    repeats: runs of every variant, round-robin; each row reports the
      fastest (see best_of).
    service: add the rows fed by a local tf.data service (1 and 2 workers).
    quick: a smoke test (--quick): short warm-ups, one stall round, and the
      targets get no verdict.

  Returns:
    The report (see summary.summarize), also written to `out`.

  Raises:
    cli.UserError: bad records or images folder, unwritable out or work_dir,
      a failed variant.
  """
  image_size = tuple(int(s) for s in image_size)
  models.check_input('seed_cnn', image_size)
  load_start = os.getloadavg()
  manifest, images_dir = data.prepare(records_dir, images_dir, work_dir,
                                      num_posters, image_size)
  records_dir = manifest.records_dir
  setup = measures.Setup(
      records=records_dir, images=images_dir, image_size=image_size,
      records_scaled=data.scaled_records(manifest, os.path.join(
          work_dir, f'{os.path.basename(os.path.normpath(records_dir))}-'
          f'{data.SCALE}x')),
      batch_size=batch_size, seconds=seconds,
      warmup_seconds=(QUICK_WARMUP_SECONDS if quick
                      else min(3.0, max(0.2, seconds / 2))),
      precision=precision, quick=quick)
  plan = measures.decode_plan(manifest, image_size)
  todo = variants(plan, service)
  runs = []
  for repeat in range(repeats):
    # Round-robin: a busy spell on a shared machine hits one run of a
    # variant, not all of them.
    for index, variant in enumerate(todo, 1):
      start = time.perf_counter()
      found = (run_isolated if isolate else run_variant)(setup, variant)
      for row in found:
        print(f'[{index}/{len(todo)}, run {repeat + 1}/{repeats}] '
              f'{row["name"]}: {row["images_per_sec"]:,.0f} images/s '
              f'({time.perf_counter() - start:.1f} s, load '
              f'{row["load_average"]:.1f})', file=sys.stderr)
      runs.append(found)
  rows = best_of(runs)
  report = summary.summarize(rows, setup, {
      'cpu_cores': len(os.sched_getaffinity(0)), 'isolate': isolate,
      'repeats': repeats,
      'load_average_start': load_start, 'load_average_end': os.getloadavg(),
      'decode_plan': plan})
  summary.write_json(out, report)
  return report

