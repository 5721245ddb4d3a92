"""How the input pipeline's faults leave tf.data: tagged errors, warnings.

A fault found inside a tf.data graph (a damaged or vanished shard, a raw
record of the wrong length) can only raise an op error with a long message,
or print. The stages that find one (shard_reads.py, decode_ops.py) tag their
message with ERROR_TAG; as_user_error, on the caller's side of the
iteration, turns a tagged error back into the one-line cli.UserError. warn
is the ignore_errors side: the same message, printed, and reading goes on;
count_pass says at the end of such a pass how many posters it delivered.
"""

import re
from typing import Optional

import tensorflow as tf

from posternet import cli

# Damaged-shard errors raised inside tf.data carry this tag; as_user_error
# finds it and returns the one-line message for the user.
ERROR_TAG = 'posternet-input-error: '


def warn(message: tf.Tensor) -> tf.Tensor:
  """Prints `warning: posternet input: …` on stderr from inside tf.data.

  PrintV2 on one joined string: tf.print would quote a string tensor, and
  TensorFlow's own log can be silenced with TF_CPP_MIN_LOG_LEVEL.
  """
  line = tf.strings.join(['warning: posternet input: ', message,
                          ' (ignore_errors)'])
  with tf.control_dependencies([tf.raw_ops.PrintV2(input=line,
                                                   output_stream='stderr')]):
    return tf.constant(True)


def as_user_error(error: Exception) -> Optional[cli.UserError]:
  """The one-line UserError for a damaged-shard error raised inside tf.data.

  Iterating the dataset (model.fit, evaluate) raises tf.errors.OpError with
  a long message; callers turn it into `error: …` with this:

    except tf.errors.OpError as e:
      raise (input_errors.as_user_error(e) or e) from None

  Returns:
    The UserError, or None when the error is not the pipeline's own.
  """
  match = re.search(re.escape(ERROR_TAG) + r'(.*)', str(error))
  if match is None:
    return None
  line = match.group(1).strip()
  # The Assert wraps its message in brackets: `assertion failed: [...]`.
  return cli.UserError(line[:-1] if line.endswith(']') else line)


def count_pass(dataset: tf.data.Dataset, expected: int, what: str,
               id_key: str) -> tf.data.Dataset:
  """Logs, at the end of a finite pass, how many posters were delivered.

  Used with ignore_errors on finite passes: single undecodable posters are
  dropped by tf.data without a count, so the pass counts what it delivers
  and compares it with the manifest (id_key: a feature of every poster).
  """
  empty = tf.nest.map_structure(
      lambda spec: tf.zeros([0] + spec.shape[1:].as_list(), spec.dtype),
      dataset.element_spec)
  size = lambda batch: tf.shape(batch[id_key], tf.int64)[0]

  def tally(seen, batch):
    total = seen + size(batch)

    message = tf.strings.join([
        what, ' delivered ', tf.strings.as_string(total), ' of ',
        str(expected), ' posters, the others were skipped'])
    short = tf.logical_and(tf.equal(size(batch), 0), total < expected)
    done = tf.cond(short, lambda: warn(message),
                   lambda: tf.constant(True))
    with tf.control_dependencies([done]):
      return total, tf.nest.map_structure(tf.identity, batch)

  dataset = dataset.concatenate(tf.data.Dataset.from_tensors(empty))
  dataset = dataset.scan(tf.constant(0, tf.int64), tally)
  return dataset.filter(lambda batch: size(batch) > 0)
