"""What every posternet command shares: user errors become one line, not a traceback."""

import sys

from absl import app


class UserError(Exception):
  """A mistake in the user's input or flags; the message says what and where.

  Commands print it as one line and exit with code 2, never a traceback.
  """


EXIT_USER_ERROR = 2


def run(main):
  """Runs an absl `main(argv)`, turning a UserError into 'error: …' and exit 2."""

  def guarded_main(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
      print('interrupted', file=sys.stderr)
      sys.exit(130)

  app.run(guarded_main)
