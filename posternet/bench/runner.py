"""Running the benchmark: every variant, here or each in a fresh process.

Each variant runs in a fresh process (isolate, the default but under
--quick): its peak RSS is its own, and no variant inherits another's threads
or memory. Repeated runs go round-robin, and each row reports its median run
with the spread (slowest and fastest) beside it.

--real_size measures records at the tutorial's store size in both formats:
the JPEG rows as always, the raw records' stages and options, the raw
records read through TFRecord's GZIP and ZLIB compression, a full epoch of
each, against the same baselines on the original posters. seed_cnn's stall
rows are left out there (on 2 CPU cores a 400x400 step takes ~25 s;
tools/gpu_check.py measures the model's share on a GPU host).
"""

import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Mapping, Optional, Sequence

from posternet.data import records
from posternet import cli
from posternet.model import networks
from posternet.bench import data
from posternet.bench import measures
from posternet.bench import summary
from posternet.bench import timing

# The demo's stored size (configs/demo.cfg): thumbnails a CPU trains on.
DEFAULT_IMAGE_SIZE = (128, 128)
DEFAULT_NUM_POSTERS = 7254  # the tutorial's CSV rows
# The pipeline rows time what the trainer runs by default (--resize_on=
# device): the host decodes and pads to a box, the model resizes. This row
# times --resize_on=host, tf.data resizing each poster, beside them.
HOST_ROW = 'resized on the host'
# --real_size: the tutorial's size, as a store size (no poster enlarged).
REAL_STORE_SIZE = (400, 400)

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


def variants(plan: Mapping, service: bool = False,
             raw_plan: Optional[Mapping] = None) -> list:
  """Every measurement of one run, in order: {name, kind, params}.

  With service, the full pipeline fed by a local tf.data service with 1 and
  2 worker processes follows the option rows. With raw_plan (--real_size:
  the raw records' decode plan), the raw records' rows follow them, and
  seed_cnn's stall rows are left out.
  """
  ratio = plan['ratio'] or 'per poster'
  out = [{'name': f'ceiling: decode {dct}, per {unit}', 'kind': 'ceiling',
          'params': {'dct_method': dct, 'batched': unit == 'batch'}}
         for dct in measures.DCT_METHODS for unit in ('poster', 'batch')]
  stages = (('read (+ shuffle)', 'read'), (measures.PARSE_ROW, 'parse'),
            (f'+ decode (ratio {ratio}, padded to the box)', 'decode'),
            (measures.PIPELINE_ROW, 'prefetch'))
  out += _pipeline_rows(stages)
  changes = (('parallel calls 1', {'num_parallel_calls': 1}),
             ('prefetch off', {'prefetch': 0}),
             ('deterministic order', {'deterministic': True}),
             ('cache decoded posters', {'cache': True}),
             (HOST_ROW, {'pad_to_box': False}))
  out += [{'name': f'pipeline: {name}', 'kind': 'pipeline',
           'params': {'options': {**measures.DEVICE_RESIZE, **options}}}
          for name, options in changes]
  if raw_plan is not None:
    out += _raw_rows()
  if service:
    out += [{'name': measures.service_row(n), 'kind': 'service',
             'params': {'workers': n}} for n in (1, 2)]
  out += [{'name': measures.SEED_LOOP_ROW, 'kind': 'seed_loop', 'params': {}},
          {'name': measures.KERAS_DIR_ROW, 'kind': 'keras_dir', 'params': {}}]
  if raw_plan is None:
    out.append({'name': 'stall', 'kind': 'stall', 'params': {}})
  out += _epoch_rows(None, measures.EPOCH_ROWS)
  if raw_plan is not None:
    out += _epoch_rows('raw', measures.EPOCH_ROWS)
    out += [row for record_set in measures.RAW_SETS[1:]
            for row in _epoch_rows(record_set, {1: measures.EPOCH_ROWS[1]})]
  return out


def select_variants(todo: Sequence[dict], only: Sequence[str]) -> list:
  """The variants whose names contain one of the texts in only (all if empty).

  Raises:
    cli.UserError: no variant matches: the message lists their names.
  """
  if not only:
    return list(todo)
  chosen = [v for v in todo if any(text in v['name'] for text in only)]
  if not chosen:
    raise cli.UserError(
        f'--only={",".join(only)} matches no variant; the variants: ' +
        '; '.join(v['name'] for v in todo))
  return chosen


def _pipeline_rows(stages, record_set: Optional[str] = None) -> list:
  """Rows of the pipeline built up to each (name, stage) on a record set."""
  return [{'name': measures.set_row(record_set, name), 'kind': 'pipeline',
           'params': {'options': {**measures.DEVICE_RESIZE, 'stop_after': stage},
                      **({'record_set': record_set} if record_set else {})}}
          for name, stage in stages]


def _raw_rows() -> list:
  """The raw records' stages and prefetch off; each compressed copy's whole."""
  rows = _pipeline_rows((('read (+ shuffle)', 'read'),
                         (measures.PARSE_ROW, 'parse'),
                         ('+ decode_raw into the box', 'decode'),
                         (measures.PIPELINE_ROW, 'prefetch')), 'raw')
  rows += [{'name': f'raw: pipeline: {name}', 'kind': 'pipeline',
            'params': {'options': {**measures.DEVICE_RESIZE, **options},
                       'record_set': 'raw'}}
           for name, options in (('prefetch off', {'prefetch': 0}),
                                 (HOST_ROW, {'pad_to_box': False}))]
  for record_set in measures.RAW_SETS[1:]:
    rows += _pipeline_rows(((measures.PIPELINE_ROW, 'prefetch'),), record_set)
  return rows


def _epoch_rows(record_set: Optional[str], names: Mapping) -> list:
  """A full epoch at each scale in names, on a record set (None: JPEG)."""
  return [{'name': measures.set_row(record_set, name), 'kind': 'epoch',
           'params': {'scale': scale,
                      **({'record_set': record_set} if record_set else {})}}
          for scale, name in names.items()]


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


def median_of(runs: Sequence[list]) -> list:
  """Merges repeated runs of the variants: per row, its median run.

  The median run's numbers (its rate, CPU and load; of an even count, the
  slower middle run), with the spread of all runs beside them
  (images_per_sec_min and _max): a single fastest run says what a variant
  did once, the median what it does, the spread how far to trust it. Every
  run's rate and load average are kept; peak RSS is the largest.
  """
  by_name = {}
  for rows in runs:
    for row in rows:
      by_name.setdefault(row['name'], []).append(row)
  merged = []
  for found in by_name.values():
    rates = [row['images_per_sec'] for row in found]
    median = dict(found[rates.index(statistics.median_low(rates))])
    median['runs_images_per_sec'] = rates
    median['images_per_sec_min'], median['images_per_sec_max'] = (
        min(rates), max(rates))
    median['runs_load_average'] = [row['load_average'] for row in found]
    median['peak_rss_bytes'] = max(row['peak_rss_bytes'] for row in found)
    merged.append(median)
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


def run_benchmark(*, out: str, records_dir: Optional[str],
                  images_dir: Optional[str], num_posters: int,
                  image_size: Optional[Sequence[int]], batch_size: int,
                  seconds: float, precision: str, work_dir: str,
                  isolate: bool, repeats: int, service: bool, quick: bool,
                  real_size: bool, csv_path: Optional[str],
                  store_size: Sequence[int], only: Sequence[str] = ()) -> dict:
  """Runs every measurement, writes the JSON report and returns it.

  Every keyword is a flag of `python -m tools.prefetch_bench`, whose flag
  definitions hold the defaults.

  Args:
    out: the JSON report's path.
    records_dir, images_dir, num_posters, image_size, real_size, csv_path,
      store_size: what is measured (_measured_data says how).
    batch_size: images per batch, for every variant.
    seconds: timed run per variant, after its warm-up.
    precision: the stall rows' Keras policy ('auto': the trainer's choice).
    work_dir: synthetic data, converted records, the scaled records,
      posters written out.
    isolate: each variant in its own process (its own peak RSS).
    repeats: runs of every variant, round-robin; each row reports the
      median and the spread (see median_of).
    service: add the rows fed by a local tf.data service (1 and 2 workers).
    quick: a smoke test (--quick): short warm-ups, one stall round, and the
      targets get no verdict.
    only: run only the variants whose names contain one of these texts
      (select_variants); empty: all of them.

  Returns:
    The report (see summary.summarize), also written to `out`.

  Raises:
    cli.UserError: bad records or images folder, unwritable out or work_dir,
      a failed variant.
  """
  load_start = os.getloadavg()
  os.makedirs(work_dir, exist_ok=True)
  measured = _measured_data(records_dir, images_dir, num_posters, image_size,
                            work_dir, real_size, csv_path, store_size)
  setup = _setup(measured, work_dir, batch_size, seconds, precision, quick)
  plan = measures.decode_plan(measured.manifest, setup.image_size)
  todo = select_variants(variants(plan, service, measured.raw_plan), only)
  runs = _run_rounds(setup, todo, repeats, isolate)
  report = summary.summarize(median_of(runs), setup, {
      'cpu_cores': len(os.sched_getaffinity(0)), 'isolate': isolate,
      'repeats': repeats, 'real_size': real_size,
      'store_size': list(store_size) if real_size else None,
      'load_average_start': load_start, 'load_average_end': os.getloadavg(),
      'decode_plan': plan, 'raw_decode_plan': measured.raw_plan})
  summary.write_json(out, report)
  return report


@dataclasses.dataclass(frozen=True)
class _Measured:
  """The records a benchmark run measures, found or made (_measured_data)."""
  manifest: records.Manifest
  images_dir: str
  image_size: tuple
  sets: dict           # real_size: the other record sets, by name
  scaled_sets: dict    # real_size: their scaled copies, by name
  raw_plan: Optional[dict]  # real_size: the raw records' decode plan


def _measured_data(records_dir, images_dir, num_posters, image_size,
                   work_dir, real_size, csv_path, store_size) -> _Measured:
  """The records and posters to measure, converted into work_dir if need be.

  Args:
    records_dir: records to measure; None: converted ones in work_dir.
    images_dir: source posters for the baselines (and of csv_path);
      default: the synthetic Images/, or the records' own posters written
      out as files.
    num_posters: synthetic posters to make, or csv_path's rows to take
      (without records_dir).
    image_size: (height, width) of the model-ready batches; None under
      real_size: the JPEG records' largest stored size.
    work_dir: where synthetic posters and converted records go.
    real_size: both formats at store_size (data.record_sets), no stall rows.
    csv_path: the tutorial's CSV of images_dir to convert (its first
      num_posters rows) instead of synthetic posters.
    store_size: real_size's store size.
  """
  sets, scaled_sets, raw_plan = {}, {}, None
  if real_size:
    sets, images_dir = data.record_sets(work_dir, num_posters, store_size,
                                        csv_path, images_dir)
    manifest = records.Manifest.read(sets.pop('jpeg'))
    image_size = image_size or manifest.stored_size_range('train')[1]
    scaled_sets = {name: _scaled(records.Manifest.read(folder), work_dir)
                   for name, folder in sets.items()}
    raw_plan = measures.decode_plan(records.Manifest.read(sets['raw']),
                                    image_size)
  else:
    networks.check_input('seed_cnn', image_size)  # the stall rows' model
    manifest, images_dir = data.prepare(records_dir, images_dir, work_dir,
                                        num_posters, image_size, csv_path)
  return _Measured(manifest, images_dir,
                   tuple(int(s) for s in image_size), sets, scaled_sets,
                   raw_plan)


def _setup(measured: _Measured, work_dir: str, batch_size: int,
           seconds: float, precision: str, quick: bool) -> measures.Setup:
  """What every variant is given: the data, the batch, the timings."""
  return measures.Setup(
      records=measured.manifest.records_dir, images=measured.images_dir,
      image_size=measured.image_size,
      records_scaled=_scaled(measured.manifest, work_dir),
      batch_size=batch_size, seconds=seconds,
      warmup_seconds=(QUICK_WARMUP_SECONDS if quick
                      else min(3.0, max(0.2, seconds / 2))),
      precision=precision, quick=quick, record_sets=measured.sets,
      scaled_sets=measured.scaled_sets)


def _run_rounds(setup: measures.Setup, todo: Sequence[dict], repeats: int,
                isolate: bool) -> list:
  """Every variant's rows, repeats times round-robin, a line per variant."""
  runs = []
  for repeat in range(repeats):
    # Round-robin: a busy spell on a shared machine hits one run of a
    # variant, not all of them.
    for index, variant in enumerate(todo, 1):
      start = time.perf_counter()
      found = (run_isolated if isolate else run_variant)(setup, variant)
      print(_progress_line(index, len(todo), repeat, repeats, found,
                           time.perf_counter() - start), file=sys.stderr)
      runs.append(found)
  return runs


def _progress_line(index: int, total: int, repeat: int, repeats: int,
                   found: Sequence[dict], seconds: float) -> str:
  """One line per variant, '[i/n, run r/R] row: N images/s; row: …'.

  A variant may measure several rows (the stall's two, an epoch's): they
  share its one counter, so the count never repeats.
  """
  rows = '; '.join(f'{row["name"]}: {row["images_per_sec"]:,.0f} images/s'
                   for row in found)
  load = max((row['load_average'] for row in found), default=0.0)
  return (f'[{index}/{total}, run {repeat + 1}/{repeats}] {rows} '
          f'({seconds:.1f} s, load {load:.1f})')


def _scaled(manifest: records.Manifest, work_dir: str) -> str:
  """data.scaled_records of a records folder, in work_dir."""
  name = os.path.basename(os.path.normpath(manifest.records_dir))
  return data.scaled_records(manifest,
                             os.path.join(work_dir, f'{name}-{data.SCALE}x'))
