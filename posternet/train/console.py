"""What the trainer prints: a compact line per epoch, commands that work as printed.

Keras' own epoch line (model.fit verbose=2) lists every metric for train and
validation, ~600 characters with posternet's 20; the full record is in the
run folder (history.csv, TensorBoard), so the console gets the few numbers a
user watches. The hints name the Python that runs the trainer, so they work
whether or not its virtual environment is active.
"""

import os
import shlex
import sys
import time
from typing import Optional, Sequence

from absl import logging
import keras

# The epoch line's numbers: (key in Keras' epoch logs, label, decimals).
# The val scores are exact, on the whole val split (val_scores).
EPOCH_FIELDS = (
    ('loss', 'loss', 4),
    ('val_loss', 'val loss', 4),
    ('val_roc_auc', 'val ROC-AUC', 3),
    ('val_precision_at_3', 'val precision@3', 3),
)


def epoch_line(epoch: int, epochs: int, logs: dict, seconds: float) -> str:
  """'epoch 3/20: loss 0.2110, val loss 0.1985, …, 612 images/s, 4.1 s'.

  Args:
    epoch: the epoch just finished, counted from 1.
    epochs: the run's --epochs.
    logs: Keras' epoch logs (a missing key is left out).
    seconds: the epoch's wall time, validation included.
  """
  parts = [f'{label} {float(logs[key]):.{decimals}f}'
           for key, label, decimals in EPOCH_FIELDS if key in logs]
  if 'images_per_sec' in logs:
    parts.append(f'{float(logs["images_per_sec"]):,.0f} images/s')
  parts.append(f'{seconds:.1f} s')
  return f'epoch {epoch}/{epochs}: ' + ', '.join(parts)


class EpochLine(keras.callbacks.Callback):
  """Logs epoch_line after each epoch; on a terminal, the step count meanwhile.

  Listed after the callbacks that add images_per_sec to the epoch's logs.
  The step counter is redrawn in place on stderr (a terminal only: a log
  file would fill with redraws) and erased before the epoch's line.
  """

  def __init__(self, epochs: int, steps_per_epoch: int,
               stream=None, interval_s: float = 0.5):
    super().__init__()
    self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
    self.stream = stream if stream is not None else sys.stderr
    self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
    self.interval_s = interval_s
    self._start = self._drawn = 0.0
    self._epoch = 0
    self._first = True

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    self._start = self._drawn = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    now = time.perf_counter()
    if self.tty and now - self._drawn >= self.interval_s:
      self._drawn = now
      self.stream.write(f'\repoch {self._epoch + 1}/{self.epochs}: step '
                        f'{batch + 1}/{self.steps_per_epoch}\x1b[K')
      self.stream.flush()

  def on_epoch_end(self, epoch, logs=None):
    if self.tty:
      self.stream.write('\r\x1b[K')
      self.stream.flush()
    line = epoch_line(epoch + 1, self.epochs, logs or {},
                      time.perf_counter() - self._start)
    # The first epoch of a process also traces the model: slower.
    logging.info('%s%s', line, ' (with tracing)' if self._first else '')
    self._first = False


def command(module: str, *args: str) -> str:
  """`<this Python> -m module args`, as a line to paste into a shell.

  The interpreter is the one running now (a virtual environment's, whether
  or not it is active), relative to the working folder when inside it.
  """
  python = sys.executable or 'python3'
  relative = os.path.relpath(python)
  if not relative.startswith(os.pardir):
    python = relative if os.sep in relative else os.path.join(os.curdir,
                                                              relative)
  return ' '.join(shlex.quote(part) for part in (python, '-m', module, *args))


def tensorboard_hint(logdir: str) -> str:
  """The command that shows a run's dashboards (posternet.board: quiet)."""
  return command('posternet.board', f'--logdir={logdir}')


def evaluate_hint(export_dir: str, records_dir: Optional[str]) -> str:
  """The command that prints the per-genre results of an export."""
  args: Sequence[str] = [f'--model={export_dir}']
  if records_dir:
    args = [*args, f'--records={records_dir}']
  return command('posternet.evaluate', *args)
