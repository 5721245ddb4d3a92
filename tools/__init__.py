"""Command-line tools of posternet: the converter and the benchmarks."""

import posternet  # pylint: disable=unused-import  # quiets TensorFlow first
