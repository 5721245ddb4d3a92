"""Tuned thresholds, the export round trip, and the predict command.

The predict command runs as a real subprocess: this module never imports
posternet.predict, whose absl flags (--model) would clash with the trainer's
in one pytest process.
"""

import json
import os
import re
import resource
import shutil

import keras
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import bad_inputs
from posternet import cli
from posternet.serve import export
from posternet import metrics
from posternet import genres
from posternet.data import augment
from posternet.data import images
from posternet.data import pipeline
from posternet.data import poster_files
from posternet.data import records
from posternet.model import input_stage
from posternet.model import networks
import record_fixtures

IMAGE_SIZE = (40, 32)
# '  Drama (0.532)', or with --threshold=tuned '  Drama (0.532 > 0.410)'.
GENRE_LINE = re.compile(r'^  (\S.*) \((\d\.\d{3})(?: > (\d\.\d{3}))?\)$')


# Thresholds.

def test_thresholds_on_a_case_with_a_known_best():
  scores = np.array([0.9, 0.8, 0.4, 0.35, 0.2, 0.1])
  truth = np.array([1, 1, 0, 1, 0, 0])
  # F1 for the top k: .5, .8, .67, .86 (k=4: 3 TP, 1 FP), .75, .67.
  labels = np.zeros([6, genres.NUM_GENRES])
  probabilities = np.full([6, genres.NUM_GENRES], 0.3)
  labels[:, 0], probabilities[:, 0] = truth, scores
  labels[:, 1], probabilities[:, 1] = truth[::-1], scores  # best: all six
  thresholds = export.tune_thresholds(labels, probabilities,
                                      min_positives=1).values
  assert thresholds[0] == pytest.approx((0.35 + 0.2) / 2)
  assert thresholds[1] == pytest.approx(0.05)
  assert thresholds[2] == export.DEFAULT_THRESHOLD  # no positive in val
  f1 = metrics.f1_per_genre(labels, probabilities, thresholds)
  assert f1[0] == pytest.approx(6 / 7) and f1[1] == pytest.approx(2 * 3 / 9)


def test_thresholds_beat_every_other_threshold():
  rng = np.random.default_rng(0)
  labels = (rng.random([200, genres.NUM_GENRES]) < 0.2).astype(np.float32)
  noise = rng.normal(0, 0.3, labels.shape)
  logits = 2 * labels - 1 + noise
  probabilities = (1 / (1 + np.exp(-logits))).astype(np.float32)
  probabilities[:50, 3] = 0.7  # ties must not be split
  tuned = metrics.f1_per_genre(
      labels, probabilities,
      export.tune_thresholds(labels, probabilities, min_positives=1).values)
  for candidate in np.unique(probabilities):
    for offset in (-1e-7, 1e-7):
      other = metrics.f1_per_genre(labels, probabilities, candidate + offset)
      assert np.all(tuned >= other - 1e-12)
  assert tuned.mean() > metrics.f1_per_genre(labels, probabilities, 0.5).mean()


def test_thresholds_reject_mismatched_shapes():
  with pytest.raises(ValueError, match='shape|num_genres'):
    export.tune_thresholds(np.zeros([4, 25]), np.zeros([5, 25]))
  with pytest.raises(ValueError, match='min_positives'):
    export.tune_thresholds(np.zeros([4, 25]), np.zeros([4, 25]),
                           min_positives=0)


def test_only_genres_with_enough_positives_are_tuned():
  enough = export.MIN_TUNING_POSITIVES
  drama, sport = genres.GENRES.index('Drama'), genres.GENRES.index('Sport')
  labels = np.zeros([100, genres.NUM_GENRES])
  probabilities = np.full([100, genres.NUM_GENRES], 0.3)
  # A model that learned little: positives at 0.011-0.02, negatives lower.
  for genre, positives in ((drama, enough), (sport, enough - 1)):
    labels[:positives, genre] = 1
    probabilities[:, genre] = np.linspace(0.001, 0.005, 100)
    probabilities[:positives, genre] = np.linspace(0.011, 0.02, positives)
  thresholds = export.tune_thresholds(labels, probabilities)
  assert thresholds.tuned_genres == ('Drama',)
  assert thresholds.min_positives == enough
  assert thresholds.values[drama] == pytest.approx((0.011 + 0.005) / 2)
  others = np.delete(thresholds.values, drama)
  assert np.all(others == export.DEFAULT_THRESHOLD)  # Sport among them
  # The minimum, not the data, keeps Sport at 0.5: one positive less needed
  # and it is tuned to 0.008 like Drama.
  lower = export.tune_thresholds(labels, probabilities,
                                 min_positives=enough - 1)
  assert lower.tuned_genres == ('Drama', 'Sport')
  assert lower.values[sport] == pytest.approx((0.011 + 0.005) / 2)


# Export and load.

class _CustomMetric(keras.metrics.Mean):
  """Unregistered, like the trainer's: the export must load without it."""

  def update_state(self, y_true, y_pred, sample_weight=None):
    return super().update_state(tf.reduce_mean(y_pred))


def _tiny_model():
  """The models' contract: the model inputs, the input stage, rescale
  inside, float32 sigmoid out."""
  keras.utils.set_random_seed(1)
  inputs = networks.model_inputs()
  x = input_stage.PosterInput(IMAGE_SIZE, name=networks.INPUT_STAGE)(
      *(inputs[key] for key in pipeline.MODEL_INPUTS))
  x = keras.layers.Rescaling(1 / 255)(x)
  x = keras.layers.Conv2D(8, 3, strides=2, activation='relu')(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  outputs = keras.layers.Dense(
      genres.NUM_GENRES, activation='sigmoid', dtype='float32',
      bias_initializer=keras.initializers.Constant(
          np.linspace(-3, 3, genres.NUM_GENRES)))(x)
  model = keras.Model(inputs, outputs)
  model.compile('adam', 'binary_crossentropy', metrics=[_CustomMetric()])
  return model


def _posters(folder):
  """Poster files of several kinds: the model's size, larger, PNG, gray."""
  rng = np.random.default_rng(0)
  def pixels(height, width):
    gradient = np.linspace(0, 255, width)[None, :, None]
    noise = rng.integers(0, 60, [height, width, 3])
    return np.clip(gradient * [1, .5, .2] + noise, 0, 255).astype(np.uint8)
  files = {
      'exact.jpg': images.encode_jpeg(pixels(*IMAGE_SIZE)),
      'large.jpg': images.encode_jpeg(pixels(90, 60)),
      'ratio2.jpg': images.encode_jpeg(pixels(100, 80)),  # decode_jpeg(ratio=2)
      'poster.png': tf.io.encode_png(pixels(50, 30)).numpy(),
      'gray.jpg': tf.io.encode_jpeg(pixels(60, 40)[..., :1],
                                    format='grayscale').numpy(),
  }
  paths = {}
  for name, data in files.items():
    paths[name] = str(folder / name)
    with open(paths[name], 'wb') as f:
      f.write(data)
  return paths


def _in_memory(model, encoded):
  """The reference: the in-memory model, eagerly, on each poster in a box.

  Each poster decoded at its DCT ratio, in a box of its own, whole: the
  model's input stage resizes it, as in training.
  """
  out = []
  for data in encoded:
    poster = images.decode_at_its_ratio(data, IMAGE_SIZE)
    inputs = {pipeline.IMAGE: poster[None],
              pipeline.BOX: augment.constant_rows(1, augment.WHOLE_BOX),
              pipeline.COLOR: augment.constant_rows(1, augment.UNIT_COLOR)}
    out.append(model(inputs, training=False).numpy()[0])
  return np.stack(out)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  folder = tmp_path_factory.mktemp('export')
  model = _tiny_model()
  paths = _posters(folder)
  encoded = {name: open(path, 'rb').read() for name, path in paths.items()}
  expected = dict(zip(encoded, _in_memory(model, list(encoded.values()))))
  # Thresholds just below exact.jpg's even genres and just above its odd ones.
  offsets = np.where(np.arange(genres.NUM_GENRES) % 2 == 0, -1e-3, 1e-3)
  thresholds = expected['exact.jpg'].astype(np.float64) + offsets
  export_dir = str(folder / 'model')
  export.export_model(model, export_dir, image_size=IMAGE_SIZE,
                      thresholds=export.Thresholds(thresholds, genres.GENRES,
                                                   1),
                      info={'val_auc': np.float32(0.5)})
  return dict(model=model, dir=export_dir, paths=paths, encoded=encoded,
              expected=expected, thresholds=thresholds, folder=folder)


def test_export_writes_the_three_parts(exported):
  assert sorted(os.listdir(exported['dir'])) == [
      'model.keras', 'posternet.json', 'saved_model']
  leftovers = [n for n in os.listdir(exported['folder']) if '.tmp' in n]
  assert not leftovers
  info = export.read_info(exported['dir'])
  assert info['genres'] == list(genres.GENRES)
  assert info['image_size'] == list(IMAGE_SIZE)
  assert info['format_version'] == export.EXPORT_VERSION == 2
  assert info['thresholds'] == dict(zip(genres.GENRES,
                                        exported['thresholds']))
  assert info['tuned_genres'] == list(genres.GENRES)
  assert info['min_tuning_positives'] == 1
  assert info['info'] == {'val_auc': 0.5}


def test_saved_model_serving_signature_matches_the_model(exported):
  loaded = tf.saved_model.load(os.path.join(exported['dir'], 'saved_model'))
  serve = loaded.signatures['serving_default']
  assert serve.structured_input_signature[1]['image_bytes'].dtype == tf.string
  names = list(exported['encoded'])  # JPEGs (3 paths), PNG, grayscale
  batch = tf.constant([exported['encoded'][n] for n in names])
  outputs = serve(image_bytes=batch)
  probabilities = outputs['probabilities'].numpy()
  assert probabilities.shape == (len(names), genres.NUM_GENRES)
  for name, row in zip(names, probabilities):
    np.testing.assert_allclose(row, exported['expected'][name], atol=1e-5)


def test_predictor_and_safe_mode_keras_match_the_model(exported):
  names = list(exported['encoded'])
  encoded = [exported['encoded'][n] for n in names]
  expected = np.stack([exported['expected'][n] for n in names])
  predictor = export.Predictor.load(exported['dir'])
  np.testing.assert_allclose(predictor.predict_bytes(encoded), expected,
                             atol=1e-5)
  assert predictor.predict_bytes([]).shape == (0, genres.NUM_GENRES)
  reloaded = export.load_keras_model(exported['dir'])
  np.testing.assert_allclose(_in_memory(reloaded, encoded), expected, atol=1e-5)
  with pytest.raises(tf.errors.InvalidArgumentError):
    predictor.predict_bytes([encoded[0], b'not an image'])


def test_export_replaces_an_older_one(exported, tmp_path):
  export_dir = str(tmp_path / 'model')
  for value in (0.25, 0.75):
    export.export_model(
        exported['model'], export_dir, image_size=IMAGE_SIZE,
        thresholds=export.Thresholds(np.full(genres.NUM_GENRES, value), (), 20))
  assert export.read_info(export_dir)['thresholds']['Action'] == 0.75
  assert os.listdir(tmp_path) == ['model']


def _as_version_1(exported, folder, keep_tuned_genres=True) -> str:
  """A copy of the export whose posternet.json is version 1's.

  Version 1: thresholds a list in genre order; its first files had no
  tuned_genres or min_tuning_positives either.
  """
  export_dir = str(folder)
  shutil.copytree(exported['dir'], export_dir)
  path = os.path.join(export_dir, 'posternet.json')
  with open(path) as f:
    document = json.load(f)
  document['format_version'] = 1
  document['thresholds'] = [document['thresholds'][g] for g in genres.GENRES]
  if not keep_tuned_genres:
    del document['tuned_genres'], document['min_tuning_positives']
  with open(path, 'w') as f:
    json.dump(document, f)
  return export_dir


def test_an_export_without_tuned_genres_still_loads(exported, tmp_path):
  """posternet.json before tuned_genres and min_tuning_positives existed."""
  export_dir = _as_version_1(exported, tmp_path / 'old',
                             keep_tuned_genres=False)
  predictor = export.Predictor.load(export_dir)
  np.testing.assert_array_equal(predictor.thresholds, exported['thresholds'])
  assert predictor.tuned_genres == ()


def test_a_folder_that_is_no_export_is_a_user_error(tmp_path):
  with pytest.raises(cli.UserError, match='does not exist'):
    export.Predictor.load(str(tmp_path / 'absent'))
  with pytest.raises(cli.UserError, match='not an exported model'):
    export.Predictor.load(str(tmp_path))
  (tmp_path / 'posternet.json').write_text('{"format_version": 7}')
  with pytest.raises(cli.UserError, match='export version 7'):
    export.load_keras_model(str(tmp_path))


# The predict command, as a user runs it.

def _blocks(stdout):
  """{poster: [(genre, probability), …]} from the text output."""
  blocks = {}
  for line in stdout.splitlines():
    if line.startswith('  '):
      name, p, _ = GENRE_LINE.match(line).groups()
      blocks[current].append((name, float(p)))
    else:
      current = line
      blocks[current] = []
  return blocks


def test_predict_prints_top3_and_reports_bad_files(exported, tmp_path,
                                                   run_module):
  paths = exported['paths']
  truncated = tmp_path / 'truncated.jpg'
  truncated.write_bytes(exported['encoded']['large.jpg'][:300])
  not_image = tmp_path / 'notes.jpg'
  not_image.write_text('not a poster')
  missing = tmp_path / 'missing.jpg'
  plot = tmp_path / 'out.png'
  good = [paths['exact.jpg'], paths['large.jpg']]
  run = run_module('posternet.predict', f'--model={exported["dir"]}',
                   f'--plot={plot}', good[0], str(truncated), str(not_image),
                   good[1], str(missing))
  assert run.returncode == 2, run.stderr
  assert 'Traceback' not in run.stderr
  blocks = _blocks(run.stdout)
  assert list(blocks) == good
  for path in good:
    expected = exported['expected'][os.path.basename(path)]
    top3 = [genres.GENRES[g] for g in np.argsort(-expected)[:3]]
    assert [name for name, _ in blocks[path]] == top3
    probabilities = [p for _, p in blocks[path]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert probabilities[0] == pytest.approx(expected.max(), abs=5e-4)
  errors = [l for l in run.stderr.splitlines() if l.startswith('error:')]
  for bad in (truncated, not_image, missing):
    assert len([l for l in errors if l.startswith(f'error: {bad}: ')]) == 1
  assert errors[-1] == ('error: 3 of 5 posters could not be predicted '
                        '(see above)')
  # Rows of 300 px; the genres start after the widest poster (32x40 → 240).
  assert Image.open(plot).format == 'PNG'
  assert Image.open(plot).size == (240 + 320, 2 * 300)


def test_predict_json_has_all_probabilities(exported, run_module):
  names = ['exact.jpg', 'poster.png', 'gray.jpg']
  run = run_module('posternet.predict', f'--model={exported["dir"]}',
                   '--json', '--top_k=5',
                   *[exported['paths'][n] for n in names])
  assert run.returncode == 0, run.stderr
  document = json.loads(run.stdout)
  assert document['errors'] == [] and document['image_size'] == list(IMAGE_SIZE)
  for name, poster in zip(names, document['posters']):
    assert poster['file'] == exported['paths'][name]
    probabilities = [poster['probabilities'][g] for g in genres.GENRES]
    np.testing.assert_allclose(probabilities, exported['expected'][name],
                               atol=1e-5)
    shown = [g['probability'] for g in poster['genres']]
    assert len(shown) == 5 and shown == sorted(probabilities, reverse=True)[:5]


def _tuned_lines(stdout):
  """{genre: (probability, threshold)} of each poster's lines, by poster."""
  shown = {}
  for line in stdout.splitlines()[1:]:
    match = GENRE_LINE.match(line)
    if match:
      shown[current][match[1]] = (float(match[2]), float(match[3]))
    else:
      current = line
      shown[current] = {}
  return shown


@pytest.mark.parametrize('version', [2, 1])
def test_predict_tuned_threshold_prints_genres_above_it(exported, run_module,
                                                        tmp_path, version):
  model = (exported['dir'] if version == 2
           else _as_version_1(exported, tmp_path / 'v1'))
  names = ['exact.jpg', 'large.jpg']
  run = run_module('posternet.predict', f'--model={model}',
                   '--threshold=tuned',
                   *[exported['paths'][n] for n in names])
  assert run.returncode == 0, run.stderr
  # First the thresholds it uses, by genre name (all 25 were tuned here).
  thresholds = dict(zip(genres.GENRES, exported['thresholds']))
  assert run.stdout.splitlines()[0] == (
      'thresholds tuned on validation: ' + ', '.join(
          f'{g} {t:.3f}' for g, t in thresholds.items()))
  shown = _tuned_lines(run.stdout)
  for name in names:
    expected = exported['expected'][name]
    above = {genres.GENRES[g] for g in range(genres.NUM_GENRES)
             if expected[g] > exported['thresholds'][g]}
    lines = shown[exported['paths'][name]]
    assert set(lines) == above
    for genre, (p, threshold) in lines.items():
      assert threshold == pytest.approx(thresholds[genre], abs=5e-4)
      assert p >= threshold
  # The thresholds sit just below exact.jpg's even genres, above its odd ones.
  assert set(shown[exported['paths']['exact.jpg']]) == set(genres.GENRES[::2])
  if version == 1:
    return  # the JSON's selection once is enough
  as_json = run_module('posternet.predict', f'--model={model}',
                       '--threshold=tuned', '--json',
                       exported['paths']['exact.jpg'])
  selection = json.loads(as_json.stdout)['selection']
  assert selection['threshold'] == 'tuned'
  assert selection['thresholds'] == pytest.approx(thresholds)
  assert selection['tuned_genres'] == list(genres.GENRES)


@pytest.fixture(scope='module')
def rare_genre_export(exported):
  """The model exported with thresholds tuned on a small val split.

  Drama has enough val positives, History one too few; both score their
  positives below exact.jpg's probability and their negatives far below, so
  a tuned threshold would print both for exact.jpg.
  """
  enough = export.MIN_TUNING_POSITIVES
  exact = exported['expected']['exact.jpg']
  rng = np.random.default_rng(1)
  probabilities = rng.random([60, genres.NUM_GENRES])
  labels = np.zeros_like(probabilities)
  for name, positives in (('Drama', enough), ('History', enough - 1)):
    genre = genres.GENRES.index(name)
    labels[:positives, genre] = 1
    probabilities[:, genre] = rng.uniform(0, 0.4, 60) * exact[genre]
    probabilities[:positives, genre] = rng.uniform(0.6, 0.9,
                                                   positives) * exact[genre]
  thresholds = export.tune_thresholds(labels, probabilities)
  export_dir = str(exported['folder'] / 'rare')
  export.export_model(exported['model'], export_dir, image_size=IMAGE_SIZE,
                      thresholds=thresholds)
  lower = export.tune_thresholds(labels, probabilities,
                                 min_positives=enough - 1)
  return dict(dir=export_dir, untuned_threshold=lower.values)


def test_predict_tuned_skips_a_genre_with_few_val_positives(
    exported, rare_genre_export, run_module):
  exact = exported['expected']['exact.jpg']
  drama, history = (genres.GENRES.index(g) for g in ('Drama', 'History'))
  # Both below 0.5 on exact.jpg; tuned on History's few posters, its
  # threshold would print it.
  assert exact[drama] < 0.5 and exact[history] < 0.5
  assert rare_genre_export['untuned_threshold'][history] < exact[history]
  info = export.read_info(rare_genre_export['dir'])
  assert info['tuned_genres'] == ['Drama']
  assert info['min_tuning_positives'] == export.MIN_TUNING_POSITIVES
  assert info['thresholds']['History'] == export.DEFAULT_THRESHOLD
  assert info['thresholds']['Drama'] < exact[drama]
  run = run_module('posternet.predict',
                   f'--model={rare_genre_export["dir"]}', '--threshold=tuned',
                   exported['paths']['exact.jpg'])
  assert run.returncode == 0, run.stderr
  drama_threshold = info['thresholds']['Drama']
  assert run.stdout.splitlines()[0] == (
      f'thresholds tuned on validation: Drama {drama_threshold:.3f}; the '
      'other 24 genres 0.5')
  printed = {g for g, _ in _blocks(run.stdout)[exported['paths']['exact.jpg']]}
  above_half = {genres.GENRES[g] for g in range(genres.NUM_GENRES)
                if exact[g] > 0.5}
  assert printed == above_half | {'Drama'}
  assert 'History' not in printed


def test_predict_without_a_model_folder_is_one_line(tmp_path, run_module):
  run = run_module('posternet.predict', f'--model={tmp_path / "nope"}',
                   str(tmp_path / 'a.jpg'))
  assert run.returncode == 2
  assert 'Traceback' not in run.stderr and run.stdout == ''
  assert run.stderr.strip().splitlines()[-1] == (
      f'error: model folder {tmp_path / "nope"} does not exist; train one '
      'with `python -m posternet.train`')


# Issue 12: hostile and empty input to prediction and serving.


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_one_pixel_limit_refuses_a_bomb_from_its_header(exported, tmp_path,
                                                         run_module):
  """Case 9: converter, serving signature and predict share MAX_PIXELS."""
  predictor = export.Predictor.load(exported['dir'])
  # Just over the limit (42 Mpx): refused by all three.
  over = tmp_path / 'over.png'
  over.write_bytes(bad_inputs.blank_png(7000, 6000))
  with pytest.raises(poster_files.BadImage, match='too large'):
    poster_files.load_poster(str(over))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='too large: 7000x6000 pixels'):
    predictor.predict_bytes([over.read_bytes()])
  # 20000x20000 in 50 KB: 1.2 GB if decoded. Refused from its header.
  bomb = tmp_path / 'bomb.png'
  bomb.write_bytes(bad_inputs.blank_png(20000, 20000))
  before = _peak_rss_mb()
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='too large: 20000x20000 pixels'):
    predictor.predict_bytes([exported['encoded']['exact.jpg'],
                             bomb.read_bytes()])
  assert _peak_rss_mb() - before < 300
  good = exported['paths']['exact.jpg']
  run = run_module('posternet.predict', f'--model={exported["dir"]}',
                   str(bomb), good, timeout=120)
  assert run.returncode == 2 and 'Traceback' not in run.stderr, run.stderr
  assert list(_blocks(run.stdout)) == [good]  # the other poster: predicted
  errors = [l for l in run.stderr.splitlines() if l.startswith('error:')]
  assert errors == [
      f'error: {bomb}: too large: 20000x20000 pixels, more than the limit '
      f'of {images.MAX_PIXELS:,}; not a poster, maybe a decompression bomb',
      'error: 1 of 2 posters could not be predicted (see above)']


def test_an_empty_batch_gets_an_empty_result(exported):
  """Case 15: the serving signature on no posters (was a conv error)."""
  serve = tf.saved_model.load(
      os.path.join(exported['dir'], export.SAVED_MODEL_NAME)).signatures[
          export.SIGNATURE]
  result = serve(**{export.INPUT_NAME: tf.constant([], tf.string)})
  probabilities = result[export.OUTPUT_NAME]
  assert probabilities.dtype == tf.float32
  assert probabilities.shape == (0, genres.NUM_GENRES)


# The same pixels in training and in prediction.


@pytest.mark.parametrize('store_size, image_size', [
    (None, (16, 12)),      # stored sizes vary: each poster its own DCT ratio
    ((40, 28), (20, 14)),  # one stored size: the ratio decided once
    ((40, 28), (16, 12)),  # ... and a resize after the ratio decode
])
def test_pipeline_and_serving_signature_give_the_same_pixels(
    make_records, tmp_path, store_size, image_size):
  manifest = make_records(num_train=2, num_val=9, image_hw=None,
                          store_size=store_size)
  # Training's side: the host's box, the device's input stage.
  stage = input_stage.PosterInput(image_size)
  delivered = {}
  for batch in pipeline.make_dataset(manifest, 'val', 4, image_size,
                                     pad_to_box=True):
    delivered.update(zip(batch[pipeline.ID].numpy(), stage(
        *(batch[key] for key in pipeline.MODEL_INPUTS)).numpy()))
  # The real serving signature, around a model that hands its posters back.
  inputs = networks.model_inputs()
  pixels = keras.Model(inputs, keras.layers.Flatten()(stage(
      *(inputs[key] for key in pipeline.MODEL_INPUTS))))
  export._write_saved_model(pixels, str(tmp_path / 'sm'), image_size)  # pylint: disable=protected-access
  serve = tf.saved_model.load(str(tmp_path / 'sm')).signatures[
      export.SIGNATURE]
  examples = record_fixtures.read_split(manifest, 'val')
  served = serve(**{export.INPUT_NAME: tf.constant(
      [e[records.IMAGE_KEY] for e in examples])})[export.OUTPUT_NAME]
  assert len(delivered) == len(examples) == 9
  for example, flat in zip(examples, served.numpy()):
    np.testing.assert_array_equal(
        flat.reshape(image_size + (3,)), delivered[example[records.ID_KEY]])
