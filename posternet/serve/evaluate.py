r"""Scores an exported model on labelled posters, against the base rates.

  python -m posternet.evaluate --model=runs/demo/export --records=records/demo
  python -m posternet.evaluate --model=runs/demo/export \
      --csv=my_posters.csv --images=my_posters/Images [--records=records/demo]

It prints macro ROC-AUC, macro average precision, precision@3, binary
cross-entropy and F1 micro/macro at 0.5, each beside the same metric for the
base rates (predicting every poster each genre's frequency in the records'
train split), then one row per genre (support, ROC-AUC, AP), and writes it
all as JSON (--json_out; default <model>/evaluation-<split>.json, or
evaluation-csv-<CSV name>.json for --csv). A JSON of other posters (another
split, CSV or model) is never replaced without --overwrite; one of the same
posters is, and the command says so.

--records scores a split (--split, default val) through the trainer's own
pipeline. --csv and --images score any posters in the tutorial's CSV format:
the CSV is read by the converter's reader, each poster by its loader, and
the posters go through the export's serving signature (the decode predict
uses). A poster that cannot be read is an error, or with --skip_bad_images a
counted skip, listed in the report. Without --records the base rates come
from the CSV's own labels, and the report says so.
"""

import os
from typing import Optional, Sequence

# A terminal gets posternet's lines, not TensorFlow's C++ log chatter.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf

from posternet import cli
from posternet.data import csv_rows
from posternet.serve import export
from posternet.data import input_errors
from posternet.data import pipeline
from posternet.data import poster_files
from posternet.data import records
from posternet.serve import report
from posternet.data import shard_plan
from posternet.data import verify
from posternet.train import val_scores
SPLITS = ('val', 'train')
# Posters per batch in records mode (--batch_size).
BATCH_SIZE = 64

# --- Scoring. ---


def score_records(model_dir: str, manifest: records.Manifest, split: str,
                  batch_size: int = BATCH_SIZE) -> report.Scored:
  """The model's probabilities for every poster of a records split.

  The posters go through the trainer's pipeline (pipeline.make_dataset,
  no augmentation) at the export's image size, into model.keras.
  """
  info = export.read_info(model_dir)
  model = export.load_keras_model(model_dir)
  dataset = pipeline.make_dataset(manifest, split, batch_size,
                                  tuple(info['image_size']), training=False,
                                  **export.pipeline_options(info))
  bar = cli.Progress(manifest.num_examples(split), f'scoring {split} posters')
  try:
    labels, probabilities = val_scores.predict(model, dataset, bar.update)
  except tf.errors.OpError as e:
    raise (input_errors.as_user_error(e) or
           verify.damaged_record_error(manifest, e) or e) from None
  bar.close()
  source = {'kind': 'records', 'records': manifest.records_dir,
            'split': split}
  return report.Scored(labels, probabilities, source, [])


def score_csv(model_dir: str, csv_path: str, images_dir: str,
              skip_bad_images: bool = False) -> report.Scored:
  """The model's probabilities for the posters a tutorial-format CSV lists.

  Each Id is scored once (the CSV's repeated rows are counted). Posters are
  read and checked by the converter's loader (poster_files.load_poster: the
  bytes the converter would store), then go in batches through the export's
  serving signature, the decode and resize predict uses.

  Raises:
    cli.UserError: a bad CSV, a missing --images folder, or a poster that
      cannot be read (without skip_bad_images), naming the file and line.
  """
  export.read_info(model_dir)  # a wrong --model fails before the CSV is read
  table = csv_rows.read_csv(csv_path)
  if not tf.io.gfile.isdir(images_dir):
    raise cli.UserError(f'--images {images_dir} is not a folder of posters '
                        f'(<Id>{csv_rows.IMAGE_SUFFIX})')
  predictor = export.Predictor.load(model_dir)
  rows = np.flatnonzero(table.first).tolist()  # ints, for the JSON
  kept, probabilities, skipped = [], [], []
  bar = cli.Progress(len(rows), 'scoring posters')
  for start in range(0, len(rows), export.PREDICT_BATCH):
    chunk = rows[start:start + export.PREDICT_BATCH]
    encoded = [_load(table, row, images_dir, skip_bad_images, skipped)
               for row in chunk]
    kept.extend(row for row, data in zip(chunk, encoded) if data is not None)
    probabilities.append(predictor.predict_bytes(
        [data for data in encoded if data is not None]))
    bar.update(len(chunk))
  bar.close()
  if not kept:
    raise cli.UserError(f'none of the {len(rows)} posters of {csv_path} '
                        'could be read')
  source = {'kind': 'csv', 'csv': csv_path, 'images': images_dir,
            'csv_rows': table.num_rows,
            'duplicate_rows': int(table.num_rows - len(rows))}
  return report.Scored(table.labels[kept], np.concatenate(probabilities), source,
                skipped)


def _load(table: csv_rows.Table, row: int, images_dir: str,
          skip_bad_images: bool, skipped: list) -> Optional[bytes]:
  """One CSV row's poster bytes; None (noted in skipped) if skipped."""
  poster_id = table.ids[row]
  path = shard_plan.image_path(images_dir, poster_id)
  try:
    return poster_files.load_poster(path, images_dir=images_dir).data
  except poster_files.BadImage as e:
    if not skip_bad_images:
      raise cli.UserError(
          f'{path} (line {table.line_of(row)} of {table.name}, Id '
          f'{poster_id}): {e}; fix or remove the row, or pass '
          '--skip_bad_images to score the others') from None
    skipped.append({'file': path, 'line': table.line_of(row),
                    'id': poster_id, 'reason': e.reason, 'detail': e.detail})
    return None


# --- Base rates. ---


def records_base_rates(manifest: records.Manifest) -> report.BaseRates:
  """Each genre's frequency in a records folder's train split."""
  try:
    labels = pipeline.read_labels(manifest, 'train').numpy()
  except tf.errors.OpError as e:
    raise (input_errors.as_user_error(e) or e) from None
  return report.BaseRates(
      labels.mean(axis=0, dtype=np.float64), 'records',
      f"each genre's frequency in the train split of {manifest.records_dir} "
      f'({len(labels):,} posters)', len(labels))


def csv_base_rates(labels: np.ndarray, csv_path: str) -> report.BaseRates:
  """Each genre's frequency among the scored posters themselves."""
  return report.BaseRates(
      np.asarray(labels).mean(axis=0, dtype=np.float64), 'csv',
      f"each genre's frequency among the {len(labels):,} scored posters of "
      f'{csv_path} (no --records given: in-sample, a little optimistic)',
      len(labels))


def evaluate(model_dir: str, *, records_dir: Optional[str] = None,
             split: str = 'val', csv_path: Optional[str] = None,
             images_dir: Optional[str] = None, skip_bad_images: bool = False,
             batch_size: int = BATCH_SIZE, json_out: Optional[str] = None,
             overwrite: bool = False) -> dict:
  """Scores the model, prints the report, writes the JSON; the command's job.

  Args:
    model_dir: an export folder (export.export_model wrote it).
    records_dir: a records folder: its split is scored (without csv_path),
      and its train split gives the base rates.
    split: the records split to score ('val' or 'train').
    csv_path: a tutorial-format CSV of posters to score instead.
    images_dir: the folder of the CSV's posters (<Id>.jpg).
    skip_bad_images: leave unreadable posters out (counted, listed).
    batch_size: posters per batch in records mode.
    json_out: where the JSON goes; default: report.default_json_path.
    overwrite: replace a JSON there that holds other posters' evaluation.

  Returns:
    The evaluation document (as written to the JSON).

  Raises:
    cli.UserError: a missing or bad model, records folder, CSV or poster,
      or a JSON of other posters at json_out (without overwrite).
  """
  export.read_info(model_dir)
  manifest = records.Manifest.read(records_dir) if records_dir else None
  path = json_out or report.default_json_path(model_dir, split, csv_path)
  replaces = report.check_json_target(path, report.what_was_scored({
      'model': model_dir,
      'scored': ({'kind': 'csv', 'csv': csv_path, 'images': images_dir}
                 if csv_path else
                 {'kind': 'records', 'records': records_dir, 'split': split})
  }), overwrite)
  if csv_path:
    scored = score_csv(model_dir, csv_path, images_dir, skip_bad_images)
  else:
    scored = score_records(model_dir, manifest, split, batch_size)
  base = (records_base_rates(manifest) if manifest is not None
          else csv_base_rates(scored.labels, csv_path))
  document = report.evaluation_document(model_dir, scored, base)
  report.write_json(path, document)
  print(report.format_report(document))
  print(f'\nJSON: {path}' + (' (replaces the earlier evaluation of the same '
                             'posters)' if replaces else ''))
  return document


# --- Flags and main. ---

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Declares the flags, only when run as a command: importing claims none."""
  flags.DEFINE_string('model', None, 'Exported model folder (the trainer\'s '
                      '--export_dir): model.keras, saved_model/, '
                      'posternet.json.')
  flags.DEFINE_string('records', None, 'Records folder: its --split is '
                      'scored, and its train split gives the base rates '
                      '(also with --csv).')
  flags.DEFINE_enum('split', 'val', SPLITS, 'The records split to score.')
  flags.DEFINE_string('csv', None, 'Score the posters of a CSV in the '
                      'tutorial\'s format (Id, Genre, 25 genre columns) '
                      'instead of a records split.')
  flags.DEFINE_string('images', None, 'The folder of the CSV\'s posters, '
                      '<Id>.jpg; default: Images/ beside the CSV.')
  flags.DEFINE_bool('skip_bad_images', False, 'With --csv: leave posters '
                    'that cannot be read out (counted and listed) instead of '
                    'stopping.')
  flags.DEFINE_integer('batch_size', BATCH_SIZE,
                       'Posters per batch (records).')
  flags.DEFINE_string('json_out', None, 'Where to write the JSON; default '
                      '<model>/evaluation-<split>.json (with --csv: '
                      'evaluation-csv-<CSV name>.json).')
  flags.DEFINE_bool('overwrite', False, 'Replace the JSON even when it holds '
                    'the evaluation of other posters (another split, CSV or '
                    'model); one of the same posters is always replaced.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.model:
    raise app.UsageError('--model is required: an exported model folder')
  if not FLAGS.records and not FLAGS.csv:
    raise app.UsageError('give --records=FOLDER, or --csv=FILE (and '
                         '--images=FOLDER)')
  if FLAGS.csv and FLAGS['split'].present:
    raise cli.UserError('--split chooses a records split to score; with '
                        '--csv the CSV\'s posters are scored')
  if FLAGS.images and not FLAGS.csv:
    raise cli.UserError('--images needs --csv: the CSV names the posters '
                        'and their genres')
  if FLAGS.batch_size < 1:
    raise cli.UserError(f'--batch_size={FLAGS.batch_size}: must be at least 1')
  images_dir = FLAGS.images or (FLAGS.csv and os.path.join(
      os.path.dirname(FLAGS.csv), 'Images'))
  evaluate(FLAGS.model, records_dir=FLAGS.records, split=FLAGS.split,
           csv_path=FLAGS.csv, images_dir=images_dir,
           skip_bad_images=FLAGS.skip_bad_images,
           batch_size=FLAGS.batch_size, json_out=FLAGS.json_out,
           overwrite=FLAGS.overwrite)


def entry() -> None:
  """The `posternet-evaluate` console script."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
