"""The exported model: tuned thresholds, the files written, loading them back.

An export folder holds:
  model.keras      the Keras model (inference only: no optimizer, no compile
                   config), loadable in Keras safe mode
  saved_model/     a SavedModel for TF Serving: `serving_default` takes a batch
                   of encoded posters (JPEG, PNG, GIF, BMP or WebP bytes) and
                   returns their 25 genre probabilities
  posternet.json   genres, image size, thresholds by genre name (and which
                   were tuned), training info

The writer (export_model) and the readers (load_keras_model, Predictor) live
here together so the folder's layout is defined in one place. A genre is
predicted when its probability is strictly above its threshold, as in the
Keras metrics at threshold 0.5.
"""

import json
import os
from typing import Mapping, NamedTuple, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from posternet import cli
from posternet import files
from posternet import genres
from posternet.data import images
from posternet.data import pipeline
from posternet.model import input_stage
# Bump when a file name or posternet.json field changes meaning; readers
# refuse other versions rather than misreading them. Version 2: thresholds
# is {genre: threshold}; version 1 (still read) had a list in genre order.
EXPORT_VERSION = 2
READABLE_VERSIONS = (1, 2)
KERAS_NAME = 'model.keras'
SAVED_MODEL_NAME = 'saved_model'
INFO_NAME = 'posternet.json'

# The serving signature: TF Serving's REST API takes binary inputs as
# {"b64": …}; the `_bytes` suffix is what other serving stacks look for.
SIGNATURE = 'serving_default'
INPUT_NAME = 'image_bytes'
OUTPUT_NAME = 'probabilities'

# A genre without enough positive posters in validation (see
# MIN_TUNING_POSITIVES) keeps the usual sigmoid decision point.
DEFAULT_THRESHOLD = 0.5

# Validation positives a genre needs before its threshold is tuned. The F1
# optimum is decided by where the positives' scores fall: with k positives
# each is 1/k of recall, and recall near the optimum (~0.5) has a standard
# error of about sqrt(0.25 / k). At 20 that is ±0.11 and no single poster
# moves recall by more than 5 %; at 5 it is ±0.22 and the "best" threshold
# is often just below the lowest-scored positive (thresholds of 0.006–0.01
# tuned on a handful of Sport posters printed Sport at 0.011). On the
# tutorial's 726-poster validation split, 20 positives is a genre on ~2.8 %
# of posters: Sport (3.0 %) and the more common genres are tuned, War,
# Musical, Western, Short, News, N/A and Reality-TV keep 0.5.
MIN_TUNING_POSITIVES = 20

# Posters per call of the serving function: bounds the decoded batch in memory.
PREDICT_BATCH = 32


class Thresholds(NamedTuple):
  """Per-genre decision thresholds and which of them were tuned.

  posternet.json records all three, so a reader can tell a tuned threshold
  from the DEFAULT_THRESHOLD a rare genre kept.
  """
  values: np.ndarray             # float64 [25]; predict when p > value
  tuned_genres: Tuple[str, ...]  # genres whose value was tuned on validation
  min_positives: int             # validation positives a genre needed


def tune_thresholds(labels: np.ndarray, probabilities: np.ndarray,
                    min_positives: int = MIN_TUNING_POSITIVES) -> Thresholds:
  """Per-genre thresholds that maximise each genre's F1 on validation.

  Multi-label genres are rare and unevenly so (Drama is on half the posters,
  News on almost none); one threshold of 0.5 for all leaves most rare genres
  never predicted. Each threshold lies halfway between the lowest probability
  still predicted and the highest one not predicted, so it does not sit on a
  validation poster's exact score. A genre with fewer than min_positives
  positive posters keeps DEFAULT_THRESHOLD: a threshold tuned on a handful
  of posters fits those posters, not the genre (see MIN_TUNING_POSITIVES).

  Args:
    labels: [N, 25] true multi-hot labels (0/1).
    probabilities: [N, 25] predicted probabilities for the same posters.
    min_positives: validation positives a genre needs to be tuned (>= 1).

  Returns:
    Thresholds; predict a genre when probability > its value.
  """
  labels = np.asarray(labels, np.float64)
  probabilities = np.asarray(probabilities, np.float64)
  if (labels.shape != probabilities.shape or labels.ndim != 2 or
      labels.shape[1] != genres.NUM_GENRES):
    raise ValueError(f'labels {labels.shape} and probabilities '
                     f'{probabilities.shape} must both be [N, num_genres]')
  if not np.all(np.isfinite(probabilities)):
    raise ValueError('probabilities contain NaN or infinity')
  if min_positives < 1:
    raise ValueError(f'min_positives={min_positives}: must be at least 1')
  positive = labels > 0.5
  tuned = positive.sum(axis=0) >= min_positives
  values = np.array([
      _best_threshold(positive[:, g], probabilities[:, g]) if tuned[g]
      else DEFAULT_THRESHOLD for g in range(genres.NUM_GENRES)])
  return Thresholds(values,
                    tuple(name for name, t in zip(genres.GENRES, tuned) if t),
                    int(min_positives))


def _best_threshold(positive: np.ndarray, scores: np.ndarray) -> float:
  """The F1-maximising threshold for one genre with positives (see above).

  A search over every cut at once: F1 = 2 TP / (predicted + positives) at
  each cut, the definition metrics.f1_per_genre scores the result with.
  """
  num_positive = positive.sum()
  order = np.argsort(-scores, kind='stable')
  scores, positive = scores[order], positive[order]
  true_positives = np.cumsum(positive)
  predicted = np.arange(1, len(scores) + 1)
  # Only cut between distinct scores: tied posters fall on one side together.
  can_cut = np.append(scores[1:] < scores[:-1], True)
  f1 = np.where(can_cut, 2 * true_positives / (predicted + num_positive), -1)
  best = int(np.argmax(f1))  # the first maximum: fewest predicted positives
  below = scores[best + 1] if best + 1 < len(scores) else 0.0
  return float((scores[best] + below) / 2)


def export_model(model: keras.Model, export_dir: str, *,
                 image_size: Sequence[int], thresholds: Thresholds,
                 resize_on: str = 'device',
                 info: Optional[Mapping] = None) -> None:
  """Writes model.keras, saved_model/ and posternet.json, atomically.

  Everything is written into a temporary folder beside export_dir, which then
  replaces export_dir whole: a reader never sees half an export.

  Args:
    model: takes the pipeline's model inputs (pipeline.model_inputs: a box
      of uint8 posters, crop boxes, colour factors) and returns float32
      [B, 25] sigmoid probabilities (its input stage makes posters of
      image_size, and it rescales inside).
    export_dir: the folder to (re)write; its parent is created if needed.
    image_size: (height, width) of the posters its input stage makes.
    thresholds: per-genre thresholds, e.g. from tune_thresholds.
    resize_on: where its records' posters were resized in training
      (--resize_on): evaluate reads them the same way (pipeline_options).
    info: JSON-serialisable extras (validation metrics, the run's flags).
  """
  values = np.asarray(thresholds.values, np.float64)
  if values.shape != (genres.NUM_GENRES,):
    raise ValueError(f'thresholds must have shape [{genres.NUM_GENRES}], '
                     f'not {list(values.shape)}')
  unknown = set(thresholds.tuned_genres) - set(genres.GENRES)
  if unknown:
    raise ValueError(f'tuned genres {sorted(unknown)} are not genres')
  inference_model = _inference_copy(model)
  export_dir = os.path.abspath(export_dir)
  with files.atomic_folder(
      export_dir, _new_temporary_folder(export_dir)) as temporary:
    inference_model.save(os.path.join(temporary, KERAS_NAME))
    _write_saved_model(inference_model,
                       os.path.join(temporary, SAVED_MODEL_NAME), image_size)
    _write_info(os.path.join(temporary, INFO_NAME), image_size,
                thresholds._replace(values=values),
                {'resize_on': resize_on, 'info': dict(info or {})})


def check_writable(export_dir: str) -> None:
  """Fails now, in one line, where export_model would fail later.

  The trainer calls it before training: makes the temporary folder
  export_model writes into (and the parents), then removes it again.

  Raises:
    cli.UserError: export_dir is a file, or that folder cannot be made.
  """
  export_dir = os.path.abspath(export_dir)
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise cli.UserError(f'cannot export to {export_dir}: it is a file, not '
                        'a folder; give another --export_dir (or '
                        '--export_dir= for none)')
  tf.io.gfile.rmtree(_new_temporary_folder(export_dir))


def _new_temporary_folder(export_dir: str) -> str:
  """files.new_temporary_folder, its failure one line naming the folder.

  Raises:
    cli.UserError: it cannot be made (a file in the way, no permission).
  """
  try:
    return files.new_temporary_folder(export_dir)
  except tf.errors.OpError as e:
    raise cli.UserError(
        f'cannot write the export to {export_dir}: cannot make '
        f'{files.temporary_name(export_dir)} ({cli.tf_message(e)}); give '
        'another --export_dir (or --export_dir= for none)') from None


def _inference_copy(model: keras.Model) -> keras.Model:
  """The same layers and weights, without optimizer state or compile config.

  The trainer compiles with custom metrics; an uncompiled model loads in safe
  mode without them, and leaving out Adam's moments makes model.keras a third
  of the size. A Functional or Sequential model is rewrapped (sharing its
  layers, no copy); another kind is saved as it is, and loads uncompiled.
  """
  if not getattr(model, 'inputs', None):
    return model
  # model.input and .output keep their structure (the inputs' dict).
  return keras.Model(model.input, model.output, name=model.name)


def _write_saved_model(model: keras.Model, path: str,
                       image_size: Sequence[int]) -> None:
  """A SavedModel whose serving signature decodes and resizes in the graph.

  Training's own rules: each poster decoded at its DCT ratio
  (images.decode_at_its_ratio), then resized by the model's input stage
  (input_stage.resize_poster, the whole poster's box), so a served poster
  becomes the pixels the pipeline and the device would make of it.
  """
  size = (int(image_size[0]), int(image_size[1]))

  def one_poster(encoded):
    return input_stage.resize_poster(
        images.decode_at_its_ratio(encoded, size), size)

  def predict(image_bytes):
    posters = tf.map_fn(one_poster, image_bytes,
                        fn_output_signature=tf.TensorSpec([*size, 3],
                                                          tf.uint8))
    inputs = pipeline.model_inputs({pipeline.IMAGE: posters})
    return tf.cast(model(inputs, training=False), tf.float32)

  def serve(image_bytes):
    # An empty batch skips the model: oneDNN's convolutions fail on 0 images.
    probabilities = tf.cond(
        tf.size(image_bytes) > 0, lambda: predict(image_bytes),
        lambda: tf.zeros([0, genres.NUM_GENRES], tf.float32))
    return {OUTPUT_NAME: probabilities}

  # No archive.track(model): the endpoint's variables are tracked anyway, and
  # walking every layer of a large model made the write several times slower.
  archive = keras.export.ExportArchive()
  archive.add_endpoint(
      SIGNATURE, serve,
      input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
  archive.write_out(path, verbose=False)


def _write_info(path: str, image_size: Sequence[int], thresholds: Thresholds,
                fields: Mapping) -> None:
  """posternet.json: what a reader needs besides the weights."""
  document = {
      'format_version': EXPORT_VERSION,
      'genres': list(genres.GENRES),
      'image_size': [int(image_size[0]), int(image_size[1])],
      'thresholds': {genre: float(t)
                     for genre, t in zip(genres.GENRES, thresholds.values)},
      # Added within version 1: readers must not require these two.
      'tuned_genres': [g for g in genres.GENRES
                       if g in thresholds.tuned_genres],
      'min_tuning_positives': int(thresholds.min_positives),
      'threshold_rule': ('a genre is predicted when its probability is above '
                         'its threshold; the genres in tuned_genres had at '
                         'least min_tuning_positives positive posters in '
                         'validation and their thresholds maximise their F1 '
                         f'there; every other genre keeps {DEFAULT_THRESHOLD}'),
      'files': {'keras': KERAS_NAME, 'saved_model': SAVED_MODEL_NAME},
      'serving': {'signature': SIGNATURE, 'input': INPUT_NAME,
                  'output': OUTPUT_NAME},
      **fields,
  }
  with open(path, 'w') as f:
    f.write(json.dumps(document, indent=2, sort_keys=True, default=_to_json)
            + '\n')


def _to_json(value):
  """Numpy scalars and arrays in `info` become plain JSON numbers and lists."""
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  raise TypeError(f'{type(value).__name__} in export info is not JSON')


def pipeline_options(info: Mapping) -> dict:
  """make_dataset's options that read records as the export's training did.

  An export without 'resize_on' (made before it was written) resized on the
  host.
  """
  return {'pad_to_box': info.get('resize_on', 'host') == 'device'}


def read_info(export_dir: str) -> dict:
  """Reads and checks an export's posternet.json.

  Raises:
    cli.UserError: the folder is missing, is not an export, or is of another
      version or genre list.
  """
  path = os.path.join(export_dir, INFO_NAME)
  if not os.path.isdir(export_dir):
    raise cli.UserError(f'model folder {export_dir} does not exist; '
                        'train one with `python -m posternet.train`')
  if not os.path.isfile(path):
    raise cli.UserError(f'{export_dir} is not an exported model: it has no '
                        f'{INFO_NAME} (pass the training run\'s --export_dir)')
  try:
    with open(path) as f:
      document = json.load(f)
  except ValueError as e:
    raise cli.UserError(f'{path} is not valid JSON: {e}') from None
  if document.get('format_version') not in READABLE_VERSIONS:
    raise cli.UserError(
        f'{path} has export version {document.get("format_version")}, this '
        'posternet reads versions '
        f'{", ".join(map(str, READABLE_VERSIONS))}; export the model again')
  if document.get('genres') != list(genres.GENRES):
    raise cli.UserError(f'{path} lists other genres than posternet knows')
  return document


def thresholds_by_genre(info: Mapping) -> dict:
  """{genre: threshold} of a posternet.json, whichever version wrote it.

  Version 1 kept a list in the order of info['genres'].

  Raises:
    cli.UserError: a genre's threshold is missing.
  """
  values = info['thresholds']
  if not isinstance(values, Mapping):
    values = dict(zip(info['genres'], values))
  missing = [genre for genre in info['genres'] if genre not in values]
  if missing:
    raise cli.UserError(f'{INFO_NAME} has no threshold for '
                        f'{", ".join(missing)}; export the model again')
  return {genre: float(values[genre]) for genre in info['genres']}


def load_keras_model(export_dir: str) -> keras.Model:
  """Loads model.keras in safe mode (no arbitrary code), uncompiled."""
  read_info(export_dir)
  path = os.path.join(export_dir, KERAS_NAME)
  if not os.path.isfile(path):
    raise cli.UserError(f'{path} is missing: the export is incomplete')
  try:
    return keras.saving.load_model(path, safe_mode=True, compile=False)
  except (ValueError, OSError) as e:
    raise cli.UserError(
        f'{path} cannot be loaded: {cli.tf_message(e)}') from None


class Predictor:
  """An export loaded for prediction from encoded poster bytes.

  It runs the SavedModel's serving signature, so it predicts exactly what TF
  Serving would: the same in-graph decode and resize as training.
  """

  def __init__(self, serve, info: Mapping):
    self._serve = serve
    self.info = dict(info)
    self.genres = tuple(info['genres'])
    self.image_size = tuple(info['image_size'])
    by_genre = thresholds_by_genre(info)
    self.thresholds = np.array([by_genre[g] for g in self.genres])
    # Older exports do not say which were tuned (nor how many positives).
    self.tuned_genres = tuple(info.get('tuned_genres', ()))

  @classmethod
  def load(cls, export_dir: str) -> 'Predictor':
    """Loads export_dir/saved_model; cli.UserError if it is not an export."""
    info = read_info(export_dir)
    path = os.path.join(export_dir, SAVED_MODEL_NAME)
    try:
      loaded = tf.saved_model.load(path)
      serve = loaded.signatures[SIGNATURE]
    except (OSError, KeyError, ValueError, tf.errors.OpError) as e:
      raise cli.UserError(f'{path} is not a usable SavedModel: '
                          f'{cli.tf_message(e)}') from None
    predictor = cls(serve, info)
    predictor._loaded = loaded  # keeps the signature's variables alive
    return predictor

  def predict_bytes(self, encoded: Sequence[bytes]) -> np.ndarray:
    """[N, 25] float32 probabilities for N encoded posters.

    Raises:
      tf.errors.InvalidArgumentError: a poster is not a decodable image.
    """
    batches = [self._predict_batch(encoded[i:i + PREDICT_BATCH])
               for i in range(0, len(encoded), PREDICT_BATCH)]
    if not batches:
      return np.zeros([0, len(self.genres)], np.float32)
    return np.concatenate(batches)

  def _predict_batch(self, encoded: Sequence[bytes]) -> np.ndarray:
    """One call of the serving signature."""
    outputs = self._serve(**{INPUT_NAME: tf.constant(list(encoded), tf.string)})
    return outputs[OUTPUT_NAME].numpy()
