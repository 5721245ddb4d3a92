"""posternet: a movie's genres from its poster, streamed from sharded TFRecords."""

from posternet import quiet as _quiet

__version__ = '0.1.0'

# Before any posternet module imports TensorFlow (POSTERNET_TF_LOGS=1: off).
_quiet.quiet_tensorflow_startup()
