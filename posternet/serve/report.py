"""An evaluation's document: what was scored, its scores, the JSON and text.

posternet.evaluate scores posters (Scored) against base rates (BaseRates);
this module turns them into the evaluation document (every score from
posternet.metrics), writes it as JSON (atomically, never over another
evaluation's without --overwrite) and formats the report a person reads.
"""

import json
import os
from typing import List, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from posternet import cli
from posternet import files
from posternet import genres
from posternet import metrics
from posternet.serve import export

# The report's rows: (metric key, label, decimals).
METRIC_ROWS = (
    ('roc_auc', 'macro ROC-AUC', 3),
    ('average_precision', 'macro AP', 3),
    ('precision_at_3', 'precision@3', 3),
    ('bce', 'binary cross-entropy', 4),
    ('f1_micro', 'F1 micro at 0.5', 3),
    ('f1_macro', 'F1 macro at 0.5', 3),
)

# Skipped posters listed in the text report (the JSON lists them all).
SHOWN_SKIPS = 5


class Scored(NamedTuple):
  """The posters scored: their labels, the model's probabilities, and what."""
  labels: np.ndarray          # float32 [N, 25]
  probabilities: np.ndarray   # float32 [N, 25]
  source: dict                # what was scored, as the JSON reports it
  skipped: List[dict]         # posters left out (--skip_bad_images)


class BaseRates(NamedTuple):
  """Each genre's frequency, and where it was counted."""
  frequencies: np.ndarray     # float64 [25]
  source: str                 # 'records' or 'csv'
  description: str            # one line for the report
  posters: int


def base_predictions(base: BaseRates, num_posters: int) -> np.ndarray:
  """The base-rate 'model': every poster gets each genre's frequency."""
  return np.tile(base.frequencies, (num_posters, 1))


# --- The report. ---


def evaluation_document(model_dir: str, scored: Scored,
                        base: BaseRates) -> dict:
  """The evaluation as the JSON holds it (NaN, i.e. undefined, as null)."""
  labels, probabilities = scored.labels, scored.probabilities
  auc = metrics.roc_auc_per_genre(labels, probabilities)
  ap = metrics.average_precision_per_genre(labels, probabilities)
  support = (labels > 0.5).sum(axis=0)
  order = np.argsort(-support, kind='stable')
  return {
      'model': model_dir,
      'image_size': export.read_info(model_dir)['image_size'],
      'scored': {**scored.source, 'posters': len(labels),
                 'skipped': scored.skipped},
      'base_rates': {'source': base.source, 'description': base.description,
                     'posters': base.posters,
                     'frequencies': dict(zip(genres.GENRES,
                                             base.frequencies.tolist()))},
      'metrics': {
          'model': _numbers(metrics.score_arrays(labels, probabilities)),
          'base_rates': _numbers(metrics.score_arrays(
              labels, base_predictions(base, len(labels)))),
      },
      'macro_over': {'roc_auc': int(np.sum(~np.isnan(auc))),
                     'average_precision': int(np.sum(~np.isnan(ap)))},
      'genres': [{'genre': genres.GENRES[g], 'support': int(support[g]),
                  'roc_auc': _number(auc[g]),
                  'average_precision': _number(ap[g]),
                  'base_rate': float(base.frequencies[g])} for g in order],
  }


def _number(value) -> Optional[float]:
  """A float for JSON; None for NaN (a metric undefined for the genre)."""
  return None if np.isnan(value) else float(value)


def _numbers(values: dict) -> dict:
  return {key: _number(value) for key, value in values.items()}


def format_report(document: dict) -> str:
  """The text report: what was scored, metrics vs base rates, the genres."""
  scored, size = document['scored'], document['image_size']
  what = (f"the {scored['split']} split of {scored['records']}"
          if scored['kind'] == 'records' else
          f"{scored['csv']} (posters in {scored['images']})")
  lines = [f"model {document['model']} ({size[0]}x{size[1]}) on {what}: "
           f"{scored['posters']:,} posters"]
  lines += _csv_notes(scored)
  lines.append(f"base rates: {document['base_rates']['description']}")
  lines += ['', f"{'':22}{'model':>8}{'base rates':>12}"]
  for key, label, decimals in METRIC_ROWS:
    lines.append(f'{label:22}' + ''.join(
        f'{_text(document["metrics"][who][key], decimals):>{width}}'
        for who, width in (('model', 8), ('base_rates', 12))))
  over = document['macro_over']
  lines += [f"(macro ROC-AUC: over the {over['roc_auc']} genres with "
            'positive and negative posters;',
            f" macro AP: over the {over['average_precision']} genres with "
            'positives)', '',
            f"{'genre':14}{'support':>8}{'ROC-AUC':>9}{'AP':>8}"]
  for row in document['genres']:
    lines.append(f"{row['genre']:14}{row['support']:>8,}"
                 f"{_text(row['roc_auc'], 3):>9}"
                 f"{_text(row['average_precision'], 3):>8}")
  return '\n'.join(lines)


def _csv_notes(scored: dict) -> list:
  """Lines on the CSV's repeated rows and skipped posters (CSV mode only)."""
  if scored['kind'] != 'csv':
    return []
  lines = []
  if scored['duplicate_rows']:
    lines.append(f"{scored['duplicate_rows']} repeated CSV rows scored once")
  skipped = scored['skipped']
  if skipped:
    lines.append(f'skipped {len(skipped)} posters that could not be read '
                 '(--skip_bad_images):')
    lines += [f"  {s['file']} (line {s['line']}): {s['reason']}"
              for s in skipped[:SHOWN_SKIPS]]
    if len(skipped) > SHOWN_SKIPS:
      lines.append(f'  … and {len(skipped) - SHOWN_SKIPS} more (the JSON '
                   'lists them all)')
  return lines


def _text(value: Optional[float], decimals: int) -> str:
  return '-' if value is None else f'{value:.{decimals}f}'


def write_json(path: str, document: dict) -> None:
  """Writes the document atomically (files.write_atomically)."""
  try:
    if os.path.dirname(path):
      tf.io.gfile.makedirs(os.path.dirname(path))
    files.write_atomically(
        path, json.dumps(document, indent=2, allow_nan=False) + '\n')
  except tf.errors.OpError as e:
    raise cli.UserError(f'cannot write {path}: {cli.tf_message(e)}') from None


def default_json_path(model_dir: str, split: str,
                      csv_path: Optional[str] = None) -> str:
  """<model>/evaluation-<split>.json, or evaluation-csv-<CSV name>.json.

  The csv- prefix keeps `--csv=…/train.csv` and `--split=train` apart.
  """
  name = (f'csv-{os.path.splitext(os.path.basename(csv_path))[0]}'
          if csv_path else split)
  return os.path.join(model_dir, f'evaluation-{name}.json')


def what_was_scored(document: dict) -> tuple:
  """What an evaluation JSON is of: the model and posters, paths absolute."""
  scored = document['scored']
  paths = (('records', 'split') if scored['kind'] == 'records'
           else ('csv', 'images'))
  absolute = lambda path: os.path.abspath(path) if path else path
  return (absolute(document['model']), scored['kind'],
          absolute(scored[paths[0]]),
          scored[paths[1]] if paths[1] == 'split' else absolute(
              scored[paths[1]]))


def check_json_target(path: str, wanted: tuple, overwrite: bool) -> bool:
  """Whether path holds an earlier evaluation of the same (wanted) posters.

  Checked before scoring, so a refusal costs nothing.

  Raises:
    cli.UserError: path holds something else (another split, CSV or model,
      or no evaluation at all) and overwrite is off.
  """
  if not os.path.exists(path):
    return False
  try:
    with open(path) as f:
      same = what_was_scored(json.load(f)) == wanted
  except (OSError, ValueError, KeyError, TypeError):
    same = False
  if not same and not overwrite:
    raise cli.UserError(
        f'{path} holds the evaluation of other posters, kept: give '
        '--json_out=PATH, or --overwrite to replace it')
  return same
