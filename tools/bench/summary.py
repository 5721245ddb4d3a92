"""The benchmark's report: the rows' ratios, the targets, the table, the JSON."""

import dataclasses
import json
import os
from typing import Mapping, Sequence

import tensorflow as tf

from posternet import cli
from posternet import files
from posternet import images
from tools.bench import data
from tools.bench import measures

# Under the table of a --quick run, instead of the targets' verdicts.
QUICK_NOTE = ('--quick is a smoke test: every variant ran once on tiny data '
              'for a blink, so these numbers measure nothing and no target '
              'is checked. Run without --quick to measure.')

# The performance targets, checked on every run but --quick.
MAX_EPOCH_RSS_BYTES = 2.5e9
MAX_RSS_GROWTH = 1.10


def _rate(rows: Sequence[Mapping], name: str) -> float:
  return next(r['images_per_sec'] for r in rows if r['name'] == name)


def _peak(rows: Sequence[Mapping], name: str) -> int:
  return next(r['peak_rss_bytes'] for r in rows if r['name'] == name)


def targets(report: Mapping) -> list:
  """The performance targets: value, target and whether it is met.

  Under --quick, met is None: tiny data timed for a blink says nothing about
  any target, and a MISSED there would only alarm.
  """
  rss = report['epoch_peak_rss_bytes']
  checks = [
      ('pipeline / ceiling', report['pipeline_images_per_sec'] /
       report['ceiling_images_per_sec'], '>=', 0.9),
      ("pipeline / tutorial's loop", report['pipeline_images_per_sec'] /
       report['seed_loop_images_per_sec'], '>=', 4.0),
      ('pipeline / image_dataset_from_directory',
       report['pipeline_images_per_sec'] / report['keras_dir_images_per_sec'],
       '>=', 3.0),
      ('stall ratio', report['stall_ratio'], '>=', 0.98),
      ('epoch peak RSS 1x (bytes)', rss['1x'], '<=', MAX_EPOCH_RSS_BYTES),
      (f'epoch peak RSS {data.SCALE}x / 1x', report['rss_growth'], '<=',
       MAX_RSS_GROWTH),
  ]
  quick = report['setup'].get('quick', False)
  return [{'name': name, 'value': value, 'op': op, 'target': target,
           'met': None if quick else
                  (value >= target if op == '>=' else value <= target)}
          for name, value, op, target in checks]


def summarize(rows: list, setup: measures.Setup, extra: Mapping) -> dict:
  """The JSON report: the rows with their ratios, top-level numbers, targets."""
  ceiling = max(r['images_per_sec'] for r in rows
                if r.get('dct_method') == images.DCT_METHOD)
  seed_loop = _rate(rows, measures.SEED_LOOP_ROW)
  for row in rows:
    row['x_ceiling'] = row['images_per_sec'] / ceiling
    row['x_seed_loop'] = row['images_per_sec'] / seed_loop
  epoch = {f'{s}x': _peak(rows, name)
           for s, name in measures.EPOCH_ROWS.items()}
  report = {
      'setup': {**dataclasses.asdict(setup), **extra},
      'ceiling_images_per_sec': ceiling,
      'ceiling_dct_method': images.DCT_METHOD,
      'pipeline_images_per_sec': _rate(rows, measures.PIPELINE_ROW),
      'seed_loop_images_per_sec': seed_loop,
      'keras_dir_images_per_sec': _rate(rows, measures.KERAS_DIR_ROW),
      'stall_ratio': (_rate(rows, measures.STALL_STREAM_ROW) /
                      _rate(rows, measures.STALL_MEMORY_ROW)),
      'epoch_peak_rss_bytes': epoch,
      'rss_growth': epoch[f'{data.SCALE}x'] / epoch['1x'],
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

  load: the 1-minute load average when the reported run started (this
  machine's other jobs; on 2 cores, above ~2 they take cores away).
  """
  lines = ['| variant | images/s | × ceiling | × tutorial loop | peak RSS | '
           'CPU ms/image | load | note |',
           '|---|---:|---:|---:|---:|---:|---:|---|']
  for row in report['rows']:
    cpu = row.get('cpu_ms_per_image')
    lines.append(
        f'| {row["name"]} | {row["images_per_sec"]:,.0f} | '
        f'{row["x_ceiling"]:.2f} | {row["x_seed_loop"]:.1f} | '
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

