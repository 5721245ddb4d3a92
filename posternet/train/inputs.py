"""The run's datasets, made from its Config: train, val, the head's passes.

One place says which pipeline options a run's settings become
(pipeline_options), so the training stream, the per-epoch validation pass,
the head phase's feature passes and the final scoring read the same posters
the same way; the tf.data service's stream is the train stream read by its
workers.
"""

from typing import Sequence

from absl import logging
import keras
import tensorflow as tf

from posternet import cli
from posternet.data import pipeline
from posternet.data import records
from posternet.data import service as data_service
from posternet.observe import step_scalars
from posternet.train import config as train_config
from posternet.train import val_scores

Config = train_config.Config


def warn_if_upscaled(manifest: records.Manifest,
                     image_size: Sequence[int]) -> bool:
  """Warns, in one line, when the host must enlarge every poster to image_size.

  Upscaling costs a resize per poster and adds no detail (configs/seed.cfg on
  128x128 records would train at 400x400 without a word otherwise). The
  converter never enlarges a poster, so a few small ones are enlarged here
  whatever the records; the warning is for records whose largest poster is
  smaller than image_size on a side. --image_size at that largest size with
  --model_size at the wanted one moves the enlarging onto the device.

  Returns:
    Whether it warned.
  """
  _, (max_h, max_w) = manifest.stored_size_range('train')
  if max_h >= image_size[0] and max_w >= image_size[1]:
    return False
  largest = cli.size_text((min(max_h, image_size[0]),
                           min(max_w, image_size[1])))
  logging.warning(
      'the records hold posters of at most %dx%d, smaller than --image_size='
      '%s: the host enlarges every poster, which costs time and adds no '
      'detail; train at --image_size=%s with --model_size=%s (the device '
      'resizes), or convert again with a larger --store_size', max_h, max_w,
      cli.size_text(image_size), largest,
      cli.size_text(image_size))
  return True


def pipeline_options(config: Config) -> dict:
  """The input pipeline's keyword options, from the config."""
  return {'shuffle_buffer': config.shuffle_buffer, 'cache': config.cache,
          'threadpool_size': config.threadpool_size,
          'ignore_errors': config.ignore_errors, 'seed': config.seed,
          'pad_to_box': config.resize_on == 'device',
          # Used by the train split only (make_dataset ignores it elsewhere).
          'augment': config.make_augment()}


def one_pass_fn(config: Config, manifest: records.Manifest):
  """The head phase's datasets: one pass of a split, as stored or augmented.

  An augmented pass (pass_index > 0) is the train pipeline's shuffle and
  --augment over one pass, seeded per pass so that each pass sees other
  crops and flips. No cache: each pass is read once.
  """

  def one_pass(split: str, pass_index: int) -> tf.data.Dataset:
    options = {**pipeline_options(config), 'cache': False,
               'training': False}
    if pass_index:
      options.update(training=True, distributed_pass=True,
                     seed=config.seed + pass_index)
    return pipeline.make_dataset(manifest, split, config.batch_size,
                                 config.image_size, **options)

  return one_pass


def distributed_train_data(config: Config, strategy,
                           clock: step_scalars.InputClock,
                           manifest: records.Manifest):
  """The train dataset, built per input pipeline with its input context.

  The clock times the training steps' waits for input (the dashboards).
  """

  def local_fn(context):
    return pipeline.make_dataset(
        manifest, 'train', config.batch_size, config.image_size, context,
        **pipeline_options(config))

  def service_fn(context):
    # The tf.data service's workers read and decode; it splits the work, so
    # no per-worker file shard here, only this replica's batch size.
    return data_service.make_dataset(
        manifest, 'train',
        pipeline.per_replica_batch_size(config.batch_size, context),
        config.image_size, config.data_service, config.data_service_mode,
        config.data_service_job, **pipeline_options(config))

  train_fn = service_fn if config.data_service else local_fn
  return strategy.distribute_datasets_from_function(
      lambda context: clock.wrap(pipeline.for_keras(train_fn(context))))


def split_dataset(config: Config, manifest: records.Manifest,
                  split: str) -> tf.data.Dataset:
  """One ordered pass of a split, for scoring (no augmentation)."""
  return pipeline.make_dataset(manifest, split, config.batch_size,
                               config.image_size, **pipeline_options(config))


def predict_split(model: keras.Model, config: Config,
                  manifest: records.Manifest, split: str) -> tuple:
  """(labels, probabilities) for every poster of a split, in one pass."""
  return val_scores.predict(model, split_dataset(config, manifest, split))
