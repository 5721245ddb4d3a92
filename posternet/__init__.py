"""posternet: a movie's genres from its poster, streamed from sharded TFRecords."""

from posternet import cli as _cli
from posternet import quiet as _quiet

__version__ = '0.1.0'

# A command's Ctrl-C during the seconds TensorFlow takes to load: exit 130.
_cli.exit_on_ctrl_c_while_a_command_starts()
# Before any posternet module imports TensorFlow (POSTERNET_TF_LOGS=1: off).
_quiet.quiet_tensorflow_startup()
