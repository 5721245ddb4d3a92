"""The head phase: the head trained on cached features of a frozen backbone.

Fine-tuning from ImageNet starts with the head alone (a random head's large
gradients would wreck the pretrained features), and on small data the head
on frozen features is most of the gain. With the backbone frozen, a poster's
features never change, so they are computed once per pass over the train
split (--feature_passes: the first as stored, later ones through the run's
--augment) and the head trains on them for --head_epochs: a matrix multiply
per step instead of the backbone's forward pass, seconds an epoch on 2 CPU
cores instead of minutes. The head is the model's own layers, so the run's
--epochs then continue (fine-tune) from it, and checkpoints, resume and the
export are those of any run.
"""

import dataclasses
import time
from typing import Callable, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from posternet import metrics
from posternet import settings
from posternet.model import networks
from posternet.model import optim
from posternet.data import pipeline
from posternet.data import records
@dataclasses.dataclass(frozen=True)
class HeadPhase:
  """The head phase's settings: the trainer's flags of the same names."""
  head_epochs: int = settings.setting(
      0, 'With --pretrained=imagenet: first train the head alone for this '
      'many epochs on the frozen backbone\'s features, computed once per '
      '--feature_passes (seconds an epoch, not minutes); then --epochs '
      'fine-tune. 0: no head phase.', minimum=0)
  head_learning_rate: float = settings.setting(
      1e-3, 'Peak learning rate of the head phase (cosine decay over '
      '--head_epochs; --optimizer and --weight_decay as for the run).')
  feature_passes: int = settings.setting(
      1, 'Passes over the train split whose backbone features the head '
      'phase trains on: the first as stored, each further one through '
      '--augment (more views of each poster).', minimum=1)


def split_at(model: keras.Model,
             layer_name: str) -> Tuple[keras.Model, keras.Model]:
  """(bottom, top): model's layers up to and including layer_name, and after.

  Both share model's layers (and so its weights): training top trains model.
  After the input stage the models here are chains (each layer feeding the
  next), so each half is its layers called in order on new inputs: the
  bottom on the model's inputs through its input stage.
  """
  names = [layer.name for layer in model.layers]
  start = names.index(networks.INPUT_STAGE) + 1
  cut = names.index(layer_name) + 1
  inputs = networks.model_inputs()
  posters = model.get_layer(networks.INPUT_STAGE)(
      *(inputs[key] for key in pipeline.MODEL_INPUTS))
  bottom = keras.Model(inputs, _calls(model.layers[start:cut], posters),
                       name=f'{model.name}_bottom')
  return bottom, _chain(model.layers[cut:],
                        model.layers[cut - 1].output.shape[1:], 'float32',
                        f'{model.name}_top')


def _calls(chain_layers, x):
  """x through the given layers, each called on the previous one's output."""
  for layer in chain_layers:
    x = layer(x)
  return x


def _chain(chain_layers, input_shape, dtype, name: str) -> keras.Model:
  """A model of the given layers, each called on the previous one's output."""
  inputs = keras.Input(input_shape, dtype=dtype)
  return keras.Model(inputs, _calls(chain_layers, inputs), name=name)


def train_head(model: keras.Model, backbone: str, phase: HeadPhase,
               manifest: records.Manifest, make_dataset: Callable,
               recipe: optim.Recipe, batch_size: int, verbose: int) -> dict:
  """Trains model's layers above backbone on the backbone's cached features.

  Args:
    model: the compiled model, its backbone pretrained.
    backbone: the backbone layer's name.
    phase: the head phase's settings.
    manifest: the records (for the number of train posters).
    make_dataset: (split, pass index) → a one-pass dataset of the
      pipeline's batches: pass 0 as stored, later passes augmented.
    recipe: the run's recipe (its optimizer, weight decay and loss).
    batch_size: the head's batch size.
    verbose: model.fit's verbosity.

  Returns:
    The head's exact validation scores (metrics.score_arrays) and timings.
  """
  start = time.perf_counter()
  bottom, top = split_at(model, backbone)
  features = tf.function(lambda inputs: tf.cast(
      bottom(inputs, training=False), tf.float32))
  passes = [_features(features, make_dataset('train', index))
            for index in range(phase.feature_passes)]
  train_x = np.concatenate([x for x, _ in passes])
  train_y = np.concatenate([y for _, y in passes])
  val_x, val_y = _features(features, make_dataset('val', 0))
  feature_seconds = time.perf_counter() - start
  logging.info('head phase: features of %d train posters x %d passes and %d '
               'val posters in %.0f s', manifest.num_examples('train'),
               phase.feature_passes, len(val_y), feature_seconds)
  steps = int(np.ceil(len(train_y) / batch_size))
  head_recipe = dataclasses.replace(
      recipe, learning_rate=phase.head_learning_rate, schedule='cosine',
      warmup_epochs=0.0)
  top.compile(optimizer=optim.make_optimizer(head_recipe, steps,
                                             phase.head_epochs),
              loss=optim.make_loss(recipe))
  top.fit(train_x, train_y, batch_size=batch_size, epochs=phase.head_epochs,
          shuffle=True, verbose=verbose)
  scores = metrics.score_arrays(val_y, top.predict(val_x, batch_size=1024,
                                                   verbose=0))
  logging.info('head phase: %d epochs, validation ROC-AUC %.4f, AP %.4f, '
               'P@3 %.4f, BCE %.4f', phase.head_epochs, scores['roc_auc'],
               scores['average_precision'], scores['precision_at_3'],
               scores['bce'])
  return {**scores, 'feature_seconds': feature_seconds,
          'seconds': time.perf_counter() - start}


def _features(features: Callable,
              dataset: tf.data.Dataset) -> Tuple[np.ndarray, np.ndarray]:
  """(features, labels) of one pass, as float32 arrays."""
  outputs, labels = [], []
  for batch in dataset:
    outputs.append(features(pipeline.model_inputs(batch)).numpy())
    labels.append(batch[pipeline.LABELS].numpy())
  return np.concatenate(outputs), np.concatenate(labels)
