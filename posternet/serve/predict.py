r"""Predicts the genres of poster files with an exported model.

  python -m posternet.predict --model=runs/demo/export poster.jpg [more …]

For each poster it prints the tutorial's top 3, most likely first:

  poster.jpg
    Drama (0.532)
    Comedy (0.311)
    Romance (0.127)

--threshold=tuned prints instead the genres above their thresholds (tuned
on validation and saved with the model), first listing them, and each genre
as `Drama (0.532 > 0.410)`, its probability and threshold; --json one JSON
document, --plot=out.png the posters with their genres drawn
beside them. Posters go through the export's SavedModel, so they are decoded
and resized by the same shared code as in training. A file that cannot be read
or decoded gets a one-line error; the others are still predicted, and the exit
code is 2 at the end.
"""

import json
import os
import sys
from typing import List, NamedTuple, Optional, Sequence

# A terminal gets posternet's lines, not TensorFlow's C++ log chatter (a bad
# poster is reported once, by us). TF_CPP_MIN_LOG_LEVEL=0 shows it again.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf

from posternet import cli
from posternet.serve import export
from posternet import files
from posternet import genres
from posternet.data import images
from posternet.observe import render
class Result(NamedTuple):
  """One poster: its probabilities, or why it could not be predicted."""
  path: str
  probabilities: Optional[np.ndarray]  # [25] float32
  error: Optional[str]


def predict_files(predictor: export.Predictor,
                  paths: Sequence[str]) -> List[Result]:
  """Predicts every poster file; a bad file becomes a Result with an error.

  Posters go in batches; a batch with a bad poster is redone one poster at a
  time so that only the bad one is lost.
  """
  results = []
  for start in range(0, len(paths), export.PREDICT_BATCH):
    results.extend(_predict_batch(predictor,
                                  paths[start:start + export.PREDICT_BATCH]))
  return results


def _predict_batch(predictor: export.Predictor,
                   paths: Sequence[str]) -> List[Result]:
  """One batch of files; redone one by one if a poster fails to decode."""
  encoded = [_read(path) for path in paths]
  readable = [i for i, data in enumerate(encoded) if isinstance(data, bytes)]
  try:
    predicted = predictor.predict_bytes([encoded[i] for i in readable])
  except tf.errors.InvalidArgumentError:
    return [_predict_one(predictor, path, data)
            for path, data in zip(paths, encoded)]
  by_index = dict(zip(readable, predicted))
  return [Result(path, by_index[i], None) if i in by_index
          else Result(path, None, str(encoded[i]))
          for i, path in enumerate(paths)]


def _predict_one(predictor: export.Predictor, path: str, data) -> Result:
  """One poster, with its error as one line when it cannot be predicted."""
  if isinstance(data, Exception):
    return Result(path, None, str(data))
  try:
    # The model's own decode, eagerly: its error names this file's problem.
    images.decode_for_model(data, predictor.image_size)
    return Result(path, predictor.predict_bytes([data])[0], None)
  except tf.errors.InvalidArgumentError as e:
    reason = cli.tf_message(e)
    # Refused from its header (images.MAX_PIXELS), not unreadable.
    if not reason.startswith('too large: '):
      reason = f'not a readable image: {reason}'
    return Result(path, None, reason)


def _read(path: str):
  """The file's bytes, or an exception that says why it cannot be read.

  Only a regular file is opened: a FIFO named poster.jpg would block.
  """
  try:
    return files.read_regular_file(path)
  except (FileNotFoundError, tf.errors.NotFoundError):
    return FileNotFoundError('no such file')
  except files.NotARegularFile as e:
    return e
  except (OSError, tf.errors.OpError) as e:
    return OSError(f'cannot read it: {cli.tf_message(e)}')


def parse_threshold(value: Optional[str]):
  """--threshold: None, 'tuned', or a probability in [0, 1]."""
  if value is None or value == 'tuned':
    return value
  try:
    number = float(value)
  except ValueError:
    number = -1.0
  if not 0.0 <= number <= 1.0:
    raise cli.UserError(f'--threshold={value}: give "tuned" or a probability '
                        'between 0 and 1')
  return number


def select_genres(probabilities: np.ndarray, genre_names: Sequence[str],
                  top_k: int, thresholds=None) -> list:
  """(genre, probability) pairs to show, most likely first.

  Args:
    probabilities: [25] one poster's probabilities.
    genre_names: the 25 names in output order.
    top_k: how many to show when thresholds is None.
    thresholds: None for the top k; else a number or [25] thresholds, and all
      genres strictly above theirs are shown.
  """
  if thresholds is None:
    chosen = genres.top_k(probabilities, top_k)
  else:
    above = probabilities.astype(np.float64) > np.asarray(thresholds)
    chosen = [(g, p) for g, p in genres.top_k(probabilities, None) if above[g]]
  return [(genre_names[g], p) for g, p in chosen]


def format_text(path: str, selected: Sequence,
                thresholds: Optional[dict] = None) -> str:
  """The tutorial's layout: the file, then `  Drama (0.532)` per genre.

  With thresholds ({genre: threshold}), `  Drama (0.532 > 0.410)`: why
  the genre is shown.
  """
  lines = [path] + [
      f'  {name} ({p:.3f})' if thresholds is None else
      f'  {name} ({p:.3f} > {thresholds[name]:.3f})' for name, p in selected]
  if not selected:
    lines.append('  (no genre above its threshold)')
  return '\n'.join(lines)


def tuned_thresholds_line(predictor: export.Predictor) -> str:
  """The thresholds --threshold=tuned uses, in one line.

  'thresholds tuned on validation: Comedy 0.412, Drama 0.388; the other 23
  genres 0.5'. An export that does not list its tuned genres (before they
  were recorded) shows every threshold that is not the default.
  """
  by_genre = dict(zip(predictor.genres, predictor.thresholds))
  tuned = [g for g in predictor.genres if g in predictor.tuned_genres or (
      not predictor.tuned_genres and by_genre[g] != export.DEFAULT_THRESHOLD)]
  if not tuned:
    return (f'thresholds: {export.DEFAULT_THRESHOLD:g} for every genre (none '
            'had enough validation posters to tune on)')
  others = len(by_genre) - len(tuned)
  return ('thresholds tuned on validation: ' +
          ', '.join(f'{g} {by_genre[g]:.3f}' for g in tuned) +
          (f'; the other {others} genres {export.DEFAULT_THRESHOLD:g}'
           if others else ''))


def json_document(model_dir: str, predictor: export.Predictor,
                  results: Sequence[Result], selections: Sequence,
                  selection: dict) -> dict:
  """The --json output: every poster's choice, all 25 probabilities, errors."""
  posters = [{'file': r.path,
              'genres': [{'genre': n, 'probability': p} for n, p in chosen],
              'probabilities': dict(zip(predictor.genres,
                                        map(float, r.probabilities)))}
             for r, chosen in zip(results, selections) if r.error is None]
  return {'model': model_dir,
          'image_size': list(predictor.image_size),
          'selection': selection,
          'posters': posters,
          'errors': [{'file': r.path, 'error': r.error}
                     for r in results if r.error is not None]}


def predict(model_dir: str, paths: Sequence[str], *,
            top_k: int = genres.TOP_K, threshold=None, as_json: bool = False,
            plot_path: Optional[str] = None) -> None:
  """Prints each poster's genres; the command's whole job.

  Args:
    model_dir: an export folder (export.export_model wrote it).
    paths: poster files.
    top_k: how many genres to print when threshold is None.
    threshold: None (top k), 'tuned', or a probability.
    as_json: print one JSON document instead of text.
    plot_path: also draw the posters and their genres into this image.

  Raises:
    cli.UserError: the model folder is not an export, or (after every other
      poster was printed) some posters could not be predicted.
  """
  predictor = export.Predictor.load(model_dir)
  results = predict_files(predictor, paths)
  cutoff = predictor.thresholds if threshold == 'tuned' else threshold
  selections = [None if r.error else
                select_genres(r.probabilities, predictor.genres, top_k, cutoff)
                for r in results]
  _print_results(model_dir, predictor, results, selections, as_json,
                 _selection(predictor, top_k, threshold))
  good = [(r.path, chosen)
          for r, chosen in zip(results, selections) if r.error is None]
  if plot_path and good:
    # Decoded by the shared code: CMYK, grayscale and PNG alike.
    render.poster_rows([(path, images.decode_rgb(_read(path)).numpy(), chosen)
                        for path, chosen in good], plot_path)
  failed = len(results) - len(good)
  if failed:
    raise cli.UserError(f'{failed} of {len(results)} posters could not be '
                        'predicted (see above)')


def _selection(predictor: export.Predictor, top_k: int, threshold) -> dict:
  """How genres were chosen, as the JSON says; tuned: every threshold."""
  if threshold is None:
    return {'top_k': top_k}
  if threshold != 'tuned':
    return {'threshold': threshold}
  return {'threshold': 'tuned',
          'thresholds': dict(zip(predictor.genres,
                                 map(float, predictor.thresholds))),
          'tuned_genres': list(predictor.tuned_genres)}


def _print_results(model_dir, predictor, results, selections, as_json,
                   selection) -> None:
  """Errors go to stderr, one line each; predictions to stdout."""
  for r in results:
    if r.error:
      print(f'error: {r.path}: {r.error}', file=sys.stderr)
  if as_json:
    print(json.dumps(json_document(model_dir, predictor, results, selections,
                                   selection), indent=2))
    return
  thresholds = selection.get('thresholds')
  if thresholds is not None:
    print(tuned_thresholds_line(predictor))
  for r, chosen in zip(results, selections):
    if r.error is None:
      print(format_text(r.path, chosen, thresholds))


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Declares the command's flags; only when it runs, so importing claims none."""
  flags.DEFINE_string(
      'model', None, 'Exported model folder (the trainer\'s --export_dir): '
      'holds saved_model/, model.keras and posternet.json.')
  flags.DEFINE_integer(
      'top_k', genres.TOP_K,
      'How many of the most likely genres to print per poster.')
  flags.DEFINE_string(
      'threshold', None, 'Print the genres above a threshold instead of the '
      'top k: "tuned" (each genre\'s threshold tuned on validation, saved with '
      'the model) or a probability such as 0.5.')
  flags.DEFINE_bool(
      'json', False, 'Print one JSON document (all posters, all 25 '
      'probabilities, errors) instead of text.')
  flags.DEFINE_string(
      'plot', None, 'Also write an image (PNG unless the name says otherwise) '
      'with one row per poster: the poster, its genres and probability bars.')


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError('name one or more poster files to predict')
  if not FLAGS.model:
    raise app.UsageError('--model is required: an exported model folder')
  if FLAGS.top_k < 1:
    raise cli.UserError(f'--top_k={FLAGS.top_k}: must be at least 1')
  predict(FLAGS.model, paths, top_k=FLAGS.top_k,
          threshold=parse_threshold(FLAGS.threshold), as_json=FLAGS.json,
          plot_path=FLAGS.plot)


def entry():
  """The `posternet-predict` console script."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
