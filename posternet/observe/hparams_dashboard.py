"""The HParams dashboard: the experiment, the run's session, its final metrics.

Every run writes the same experiment (hparam names and metric columns), so
the dashboard compares any runs under one --logdir; KEY_HPARAMS are listed
first. After training, final_<metric> scalars in validation/ hold the whole
val split's metrics (the experiment's first metric columns).
"""

import os
from typing import Mapping, Sequence

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import plugin_data_pb2

# Config fields left out of HParams: where files go and how loud it is; they
# do not change what is learned.
_NOT_HPARAMS = ('logdir', 'run_name', 'export_dir', 'verbose', 'resume',
                'overwrite', 'keep_checkpoints', 'log_every_steps',
                'dashboard_every_epochs', 'profile_steps', 'data_service_timeout')

# The settings that tell runs apart, listed first in the HParams dashboard.
# It checks only its first five hparams by default (batch_size, epochs,
# image_size, learning_rate, model: the order is by name); model_size and
# precision are the next two rows.
KEY_HPARAMS = ('model', 'image_size', 'model_size', 'learning_rate',
               'batch_size', 'precision', 'epochs')


def hparams_values(config: Mapping, resolved: Mapping) -> dict:
  """The run's settings as HParams values (bool, int, float or str).

  model_size is the size the network is built at (image_size when unset), so
  every run has the column, whichever run's experiment TensorBoard reads.

  Args:
    config: the trainer's Config fields, by name; those in _NOT_HPARAMS and
      those left unset (None) are left out.
    resolved: the resolved settings to show, by name (the trainer's
      Resolved.hparams()); a resolved value replaces the config's.
  """
  settings = {**config, **resolved}
  if settings.get('model_size') is None:
    settings['model_size'] = settings.get('image_size')
  values = {}
  for name, value in settings.items():
    if name in _NOT_HPARAMS or value is None:
      continue
    if isinstance(value, (tuple, list)):
      value = 'x'.join(str(v) for v in value)
    if not isinstance(value, (bool, int, float, str)):
      value = str(value)
    values[name] = value
  return values


def experiment_metrics(metric_names: Sequence[str]) -> list:
  """The HParams metric columns: final whole-val metrics, then progress."""
  names = ['loss', *metric_names]
  metrics = [hp.Metric(f'final_{name}', group='validation',
                       display_name=f'final {name}')
             for name in [*names, 'f1_macro_tuned']]
  metrics += [hp.Metric(f'epoch_{name}', group='validation',
                        display_name=f'val {name} (last epoch)')
              for name in ('loss', 'roc_auc')]
  metrics += [hp.Metric(f'epoch_{name}', group='train',
                        display_name=f'train {name}')
              for name in ('loss', 'images_per_sec', 'input_wait_share')]
  return metrics


def experiment_summary(names: Sequence[str], metric_names: Sequence[str]):
  """The HParams experiment as a Summary proto, KEY_HPARAMS marked `differs`.

  The dashboard lists hparams that differ first (the rest by name) and
  checks the first five; hp.HParam cannot set `differs`, the proto can.
  """
  summary = hp.hparams_config_pb(hparams=[hp.HParam(name) for name in names],
                                 metrics=experiment_metrics(metric_names))
  plugin_data = summary.value[0].metadata.plugin_data
  content = plugin_data_pb2.HParamsPluginData.FromString(plugin_data.content)
  for info in content.experiment.hparam_infos:
    info.differs = info.name in KEY_HPARAMS
  plugin_data.content = content.SerializeToString()
  return summary


class HParams(keras.callbacks.Callback):
  """Writes the experiment and the run's session at the start of training.

  Every run writes the same experiment (the same hparam names and metric
  columns), so the HParams dashboard compares any runs under one --logdir.
  """

  def __init__(self, run_dir: str, values: Mapping, metric_names: Sequence[str],
               trial_id: str):
    super().__init__()
    self.run_dir, self.values = run_dir, dict(values)
    self.metric_names, self.trial_id = list(metric_names), trial_id

  def on_train_begin(self, logs=None):
    writer = tf.summary.create_file_writer(self.run_dir)
    with writer.as_default():
      tf.summary.experimental.write_raw_pb(
          experiment_summary(list(self.values), self.metric_names)
          .SerializeToString(), step=0)
      hp.hparams(self.values, trial_id=self.trial_id)
    writer.close()


def write_final_metrics(run_dir: str, metrics: Mapping[str, float],
                        step: int) -> None:
  """final_<name> scalars in validation/: the whole val split, after training.

  Args:
    run_dir: the run folder.
    metrics: name → value (the trainer's final validation metrics).
    step: the last epoch's index, as Keras numbers epoch scalars.
  """
  writer = tf.summary.create_file_writer(os.path.join(run_dir, 'validation'))
  with writer.as_default():
    for name, value in metrics.items():
      tf.summary.scalar(f'final_{name}', value, step=step)
  writer.close()
