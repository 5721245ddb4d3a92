"""TensorBoard on posternet's runs (`make tensorboard`), started quietly.

  python -m posternet.board --logdir=runs [--host=127.0.0.1] [--port=6006]

TensorBoard itself, with its own flags (--help lists them), minus
TensorFlow's start-up lines (oneDNN, CUDA drivers, cuInit), which it would
print twice and users read as errors: importing posternet first quiets them
(posternet/quiet.py; POSTERNET_TF_LOGS=1 shows them).
"""

import posternet  # pylint: disable=unused-import  # quiets TensorFlow first
from tensorboard import main as tensorboard_main  # pylint: disable=g-bad-import-order


def entry() -> None:
  """`python -m posternet.board`: TensorBoard's own main."""
  tensorboard_main.run_main()


if __name__ == '__main__':
  entry()
