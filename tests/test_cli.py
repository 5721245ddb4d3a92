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


# --- --help of every command (issue 21, points 4 and 10). ---

# Each command's own flags that its --help must list (a few of each).
COMMANDS = {
    'posternet.train': ('records', 'epochs', 'run_name', 'overwrite',
                        'resume', 'verbose'),
    'posternet.evaluate': ('model', 'records', 'csv', 'json_out',
                           'overwrite'),
    'posternet.predict': ('model', 'top_k', 'threshold', 'json', 'plot'),
    'posternet.synthetic': ('out', 'num_posters', 'seed', 'workers'),
    'tools.make_records': ('csv', 'images', 'out', 'store_size', 'verify'),
    'tools.prefetch_bench': ('records', 'quick', 'out', 'real_size'),
}
# Words of notes for developers, not for users of a command.
DEVELOPER_NOTES = ('tests call', 'test seam', 'Internal', 'run(Config)',
                   '.py', 'posternet/', "train_config's")


@pytest.fixture(scope='module')
def helps(run_module):
  """{module: `python -m module --help`, finished}."""
  return {module: run_module(module, '--help') for module in COMMANDS}


def _lists_flag(text, name):
  return f'\n  --{name}:' in text or f'\n  --[no]{name}:' in text


def test_help_lists_the_commands_own_flags_and_exits_0(helps):
  for module, names in COMMANDS.items():
    result = helps[module]
    assert result.returncode == 0, (module, result.stderr[-2000:])
    assert result.stderr == '', module  # quiet: no TensorFlow start-up lines
    for name in names:
      assert _lists_flag(result.stdout, name), (module, name)
    assert _lists_flag(result.stdout, 'flagfile'), module
    # absl's and TensorFlow's flags are for --helpfull only.
    for other in ('logtostderr', 'test_tmpdir', 'pdb_post_mortem',
                  'only_check_args'):
      assert other not in result.stdout, (module, other)
    assert result.stdout.rstrip().endswith('--helpfull.'), module


def test_help_is_for_users(helps):
  for module, result in helps.items():
    docstring = result.stdout.split('\nflags:\n')[0]
    for note in DEVELOPER_NOTES:
      assert note not in docstring, (module, note)


def test_the_run_folder_list_of_help_is_the_readme_s(helps, repo):
  lines = helps['posternet.train'].stdout.splitlines()
  start = lines.index('A run lives in --logdir/<run_name>/:') + 1
  listed = lines[start:lines.index('', start)]
  assert [line.split()[0] for line in listed] == [
      'config.json', 'flags.txt', 'train/', 'history.csv', 'checkpoints/',
      'best/', 'backup/', 'summary.json', 'export/']
  with open(f'{repo}/README.md') as f:
    readme = f.read().splitlines()
  for line in listed:
    assert line in readme, line


def test_which_help_is_asked():
  for args in (['--help'], ['-h'], ['-?'], ['--helpshort'], ['-x', '-help']):
    assert cli._help_asked(args) == 'short', args  # pylint: disable=protected-access
  assert cli._help_asked(['--helpfull']) == 'full'  # pylint: disable=protected-access
  for args in ([], ['--records=r'], ['--', '--help'], ['--helpxml']):
    assert cli._help_asked(args) is None, args  # pylint: disable=protected-access
