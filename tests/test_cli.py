"""Tests of posternet/cli.py: errors' one-line reasons, eager and in graphs."""

import pytest
import tensorflow as tf

from posternet import cli

NOT_AN_IMAGE = 'Unknown image file format.'


def _error(call):
  """The exception call() raises."""
  with pytest.raises(Exception) as info:
    call()
  return info.value


def test_tf_message_of_an_eager_op():
  message = cli.tf_message(_error(lambda: tf.io.decode_image(b'garbage')))
  assert message.startswith(NOT_AN_IMAGE)
  assert '{{' not in message and '[Op:' not in message


def test_tf_message_of_a_graph_skips_the_stack():
  decode = tf.function(tf.io.decode_jpeg)
  message = cli.tf_message(_error(lambda: decode(tf.constant(b'garbage'))))
  assert message.startswith(NOT_AN_IMAGE)


def test_tf_message_inside_tf_data():
  dataset = tf.data.Dataset.from_tensors(b'garbage').map(tf.io.decode_jpeg)
  message = cli.tf_message(_error(lambda: next(iter(dataset))))
  assert NOT_AN_IMAGE in message and '\n' not in message
  assert '[[' not in message and '[Op:' not in message


def test_tf_message_of_other_errors():
  assert cli.tf_message(ValueError('first  line\n  second')) == 'first line'
  assert cli.tf_message(KeyError('name')) == "'name'"
  assert cli.tf_message(ValueError()) == 'ValueError'


def test_tf_message_of_an_assert_is_its_message():
  def check(flag):
    with tf.control_dependencies([tf.debugging.Assert(
        flag, ['too large: 9x9 pixels'])]):
      return tf.identity(flag)

  for call in (check, tf.function(check)):
    assert cli.tf_message(_error(lambda c=call: c(tf.constant(False)))) == (
        'too large: 9x9 pixels')
