"""The benchmark's report: the rows' ratios, the targets, the table, the JSON."""

import dataclasses
import json
import os
from typing import Mapping, Optional, Sequence

import tensorflow as tf

from posternet import cli
from posternet import files
from posternet.data import images
from posternet.bench import data
from posternet.bench import measures

# Under the table of a --quick run, instead of the targets' verdicts.
QUICK_NOTE = ('--quick is a smoke test: every variant ran once on tiny data '
              'for a blink, so these numbers measure nothing and no target '
              'is checked. Run without --quick to measure.')

# The performance targets, checked on every run but --quick.
MAX_EPOCH_RSS_BYTES = 2.5e9
MAX_RSS_GROWTH = 1.10
# Issue 20's, on posters stored at up to 400x400 (--real_size): the
# pipeline keeps the decode ceiling's pace, raw records most of the pace at
# which they are read and parsed, and both beat Keras' own loader.
MIN_OVER_CEILING = 0.9
MIN_RAW_OVER_READ = 0.75
MIN_OVER_KERAS_DIR = 3.0


def _rate(rows: Sequence[Mapping], name: str) -> Optional[float]:
  """A row's images/s; None when the run has no such row."""
  return next((r['images_per_sec'] for r in rows if r['name'] == name), None)


def _peak(rows: Sequence[Mapping], name: str) -> Optional[int]:
  return next((r['peak_rss_bytes'] for r in rows if r['name'] == name), None)


def targets(report: Mapping) -> list:
  """The performance targets: value, target and whether it is met.

  The rows a run has decide which: the stall ratio where seed_cnn's rows
  ran, the raw pipeline against the JPEG ceiling and each record set's
  epoch RSS under --real_size. Under --quick, met is None: tiny data timed
  for a blink says nothing about any target, and a MISSED there would only
  alarm.
  """
  pipeline, raw = (report['pipeline_images_per_sec'],
                   report['raw_pipeline_images_per_sec'])
  keras_dir = report['keras_dir_images_per_sec']
  checks = [
      ('pipeline / ceiling',
       _ratio(pipeline, report['ceiling_images_per_sec']), '>=',
       MIN_OVER_CEILING),
      ("pipeline / tutorial's loop",
       _ratio(pipeline, report['seed_loop_images_per_sec']), '>=', 4.0),
      ('pipeline / image_dataset_from_directory',
       _ratio(pipeline, keras_dir), '>=', MIN_OVER_KERAS_DIR),
      ('raw pipeline / raw read + parse',
       _ratio(raw, report['raw_read_images_per_sec']), '>=',
       MIN_RAW_OVER_READ),
      ('raw pipeline / image_dataset_from_directory',
       _ratio(raw, keras_dir), '>=', MIN_OVER_KERAS_DIR),
      ('stall ratio', report['stall_ratio'], '>=', 0.98),
  ]
  for record_set, rss in report['epoch_peak_rss_bytes'].items():
    prefix = '' if record_set == 'jpeg' else f'{record_set} '
    checks.append((f'{prefix}epoch peak RSS 1x (bytes)', rss['1x'], '<=',
                   MAX_EPOCH_RSS_BYTES))
    if f'{data.SCALE}x' in rss:
      checks.append((f'{prefix}epoch peak RSS {data.SCALE}x / 1x',
                     rss[f'{data.SCALE}x'] / rss['1x'], '<=',
                     MAX_RSS_GROWTH))
  quick = report['setup'].get('quick', False)
  # A check whose rows did not run (--only, or not this mode) is left out.
  return [{'name': name, 'value': value, 'op': op, 'target': target,
           'met': None if quick else
                  (value >= target if op == '>=' else value <= target)}
          for name, value, op, target in checks if value is not None]


def _ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
  """value / base; None when either row did not run."""
  return None if value is None or not base else value / base


def _epoch_peaks(rows: Sequence[Mapping]) -> dict:
  """{record set: {'1x': bytes, '4x': bytes}} of the epoch rows run."""
  peaks = {}
  for record_set in (None,) + measures.RAW_SETS:
    for scale, name in measures.EPOCH_ROWS.items():
      peak = _peak(rows, measures.set_row(record_set, name))
      if peak is not None:
        peaks.setdefault(record_set or 'jpeg', {})[f'{scale}x'] = peak
  return peaks


def summarize(rows: list, setup: measures.Setup, extra: Mapping) -> dict:
  """The JSON report: the rows with their ratios, top-level numbers, targets."""
  ceiling = max((r['images_per_sec'] for r in rows
                 if r.get('dct_method') == images.DCT_METHOD), default=None)
  seed_loop = _rate(rows, measures.SEED_LOOP_ROW)
  for row in rows:
    row['x_ceiling'] = _ratio(row['images_per_sec'], ceiling)
    row['x_seed_loop'] = _ratio(row['images_per_sec'], seed_loop)
  epoch = _epoch_peaks(rows)
  jpeg_epochs = epoch.get('jpeg', {})
  report = {
      'setup': {**dataclasses.asdict(setup), **extra},
      'ceiling_images_per_sec': ceiling,
      'ceiling_dct_method': images.DCT_METHOD,
      'pipeline_images_per_sec': _rate(rows, measures.PIPELINE_ROW),
      'raw_pipeline_images_per_sec': _rate(
          rows, measures.set_row('raw', measures.PIPELINE_ROW)),
      'raw_read_images_per_sec': _rate(
          rows, measures.set_row('raw', measures.PARSE_ROW)),
      'seed_loop_images_per_sec': seed_loop,
      'keras_dir_images_per_sec': _rate(rows, measures.KERAS_DIR_ROW),
      'stall_ratio': _ratio(_rate(rows, measures.STALL_STREAM_ROW),
                            _rate(rows, measures.STALL_MEMORY_ROW)),
      'epoch_peak_rss_bytes': epoch,
      'rss_growth': _ratio(jpeg_epochs.get(f'{data.SCALE}x'),
                           jpeg_epochs.get('1x')),
      'rows': rows,
  }
  report['targets'] = targets(report)
  return report


def _note(row: Mapping) -> str:
  """The table's last column: what else a row needs to be read right."""
  if 'steps_per_sec' in row:
    return f'{row["steps_per_sec"]:.3g} steps/s, {row["precision"]}'
  if 'all_posters' in row:
    return (f'{row["images"]} posters; all {row["all_posters"]}: '
            f'~{row["peak_rss_bytes_all_posters"] / 1e9:.2f} GB')
  if 'service_workers' in row:
    return ('CPU and RSS: the trainer process only (decode runs in the '
            'worker processes)')
  if 'scale' in row:
    return (f'{row["posters"]} posters, RSS at start '
            f'{row["rss_start_bytes"] / 1e6:,.0f} MB')
  return ''


def format_table(report: Mapping) -> str:
  """The rows as a Markdown table, then the targets, one line each.

  images/s: the median run's; spread: the slowest and fastest run's. load:
  the 1-minute load average when the reported run started (this machine's
  other jobs; on 2 cores, above ~2 they take cores away).
  """
  lines = ['| variant | images/s | spread | × ceiling | × tutorial loop | '
           'peak RSS | CPU ms/image | load | note |',
           '|---|---:|---:|---:|---:|---:|---:|---:|---|']
  for row in report['rows']:
    cpu = row.get('cpu_ms_per_image')
    spread = (f'{row["images_per_sec_min"]:,.0f}–'
              f'{row["images_per_sec_max"]:,.0f}'
              if len(row.get('runs_images_per_sec', ())) > 1 else '')
    lines.append(
        f'| {row["name"]} | {row["images_per_sec"]:,.0f} | {spread} | '
        f'{_number(row["x_ceiling"], 2)} | {_number(row["x_seed_loop"], 1)} | '
        f'{row["peak_rss_bytes"] / 1e6:,.0f} MB | '
        f'{"" if cpu is None else f"{cpu:.3f}"} | '
        f'{row["load_average"]:.1f} | {_note(row)} |')
  lines.append('')
  if report['setup'].get('quick'):
    lines.append(QUICK_NOTE)
    return '\n'.join(lines)
  for check in report['targets']:
    value = check['value']
    shown = f'{value / 1e9:.2f} GB' if 'bytes' in check['name'] else (
        f'{value:.3f}')
    target = (f'{check["target"] / 1e9:.1f} GB' if 'bytes' in check['name']
              else f'{check["target"]:g}')
    verdict = 'met' if check['met'] else 'MISSED'
    lines.append(f'- {check["name"]}: {shown} (target {check["op"]} '
                 f'{target}): {verdict}')
  return '\n'.join(lines)


def _number(value: Optional[float], decimals: int) -> str:
  """A ratio for the table; '-' where its base row did not run (--only)."""
  return '-' if value is None else f'{value:.{decimals}f}'


def write_json(path: str, report: Mapping) -> None:
  """Writes the report atomically (temporary name, then rename)."""
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
    files.write_atomically(path, json.dumps(report, indent=2) + '\n')
  except OSError as e:
    raise cli.UserError(f'cannot write {path}: {e.strerror}') from None
  except tf.errors.OpError as e:
    raise cli.UserError(f'cannot write {path}: {cli.tf_message(e)}') from None

