"""posternet: a movie's genres from its poster, streamed from sharded TFRecords."""

__version__ = '0.1.0'
