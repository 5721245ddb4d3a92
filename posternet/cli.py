"""What every posternet command shares: user errors become one line, not a traceback."""

import os
import re
import signal
import sys
import threading
import time
from typing import Optional, Sequence, Tuple

from absl import app
from absl import flags


class UserError(Exception):
  """A mistake in the user's input or flags; the message says what and where.

  Commands print it as one line and exit with code 2, never a traceback.
  """


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def run(main):
  """Runs an absl `main(argv)`, turning a UserError into 'error: …' and exit 2.

  Ctrl-C becomes 'interrupted' and exit 130, after the work's own cleanup
  (finally blocks, locks) ran. --help (-h, --helpshort) prints the command's
  own flags and exits 0 (see help_text).
  """

  def guarded_main(argv):
    _interrupt_with_keyboard_interrupt()
    try:
      return main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
      print('interrupted', file=sys.stderr)
      sys.exit(EXIT_INTERRUPTED)

  app.run(guarded_main, flags_parser=_help_or_parse(main.__module__))


# --- --help: the command's own flags. ---
#
# absl's --help lists the flags of the module that is __main__ only, so a
# command whose flags are defined in a library module (the trainer's, in
# train_config) showed none of them, and absl exits 1 after any help.

_HELP = ('--help', '-help', '-h', '--h', '-?', '--helpshort', '-helpshort')
_HELP_FULL = ('--helpfull', '-helpfull')
# Packages whose flags are a command's own (the rest: absl's, TensorFlow's).
_OWN_PACKAGES = ('posternet', 'tools')
# absl's own --flagfile, which every command takes.
_FLAGFILE_HELP = ('  --flagfile: Reads more flags from a file, one a line (as in '
                  'configs/*.cfg);\n    later flags win.')


def _help_or_parse(module_name: str):
  """A flags_parser for app.run: help on stdout and exit 0, else absl's parse."""

  def parse(argv):
    asked = _help_asked(argv[1:])
    if asked:
      print(help_text(module_name, full=asked == 'full'))
      sys.exit(0)
    return app.parse_flags_with_usage(argv)

  return parse


def _help_asked(args) -> Optional[str]:
  """'full', 'short' or None: which help the command line asks for.

  Only the arguments before a lone `--` are flags.
  """
  for arg in args:
    if arg == '--':
      return None
    if arg in _HELP_FULL:
      return 'full'
    if arg in _HELP:
      return 'short'
  return None


def help_text(module_name: str, full: bool = False,
              values: flags.FlagValues = flags.FLAGS) -> str:
  """The command's docstring, then its own flags (all flags with full).

  Args:
    module_name: the command's module ('__main__' under `python -m`).
    full: list every flag, absl's and TensorFlow's too (--helpfull).
    values: the flags (tests pass their own).
  """
  module = sys.modules.get(module_name)
  doc = ((module.__doc__ if module else None) or '').strip('\n')
  if full:
    return f'{doc}\n\nflags:\n{values.get_help()}'
  lines = [doc, '', 'flags:']
  lines += [_flag_help(flag) for flag in own_flags(values)]
  lines += [_FLAGFILE_HELP, '',
            'Every flag, absl\'s and TensorFlow\'s too: --helpfull.']
  return '\n'.join(lines)


def own_flags(values: flags.FlagValues = flags.FLAGS) -> list:
  """The flags posternet's own modules defined, in the order defined.

  Flags of `python -m`'s __main__ are filed under sys.argv[0] by absl.
  """
  found = []
  for module, module_flags in values.flags_by_module_dict().items():
    if (module == sys.argv[0] or
        module.split('.')[0] in _OWN_PACKAGES):
      found += [flag for flag in module_flags if flag not in found]
  return found


def _flag_help(flag) -> str:
  """One flag as absl's help lays it out: name, help, default."""
  name = f'--[no]{flag.name}' if flag.boolean else f'--{flag.name}'
  text = flags.text_wrap(f'{name}: {flag.help}', indent='    ',
                         firstline_indent='  ')
  if flag.default_as_str:
    text += '\n' + flags.text_wrap(f'(default: {flag.default_as_str})',
                                   indent='    ')
  return text


def exit_on_ctrl_c_while_a_command_starts() -> None:
  """Ctrl-C while a command starts exits 130 at once, with no traceback.

  Importing TensorFlow takes seconds, before run() can catch anything; a
  KeyboardInterrupt there would print a long traceback. Only commands
  (`python -m posternet.…` or `tools.…`: argv[0] is '-m' while the module is
  found; `posternet-…` scripts) get this: a program that imports posternet
  keeps its own Ctrl-C. run() hands Ctrl-C back to Python when main starts.
  """
  program = os.path.basename(sys.argv[0]) if sys.argv else ''
  if ((program == '-m' or program.startswith('posternet-'))
      and threading.current_thread() is threading.main_thread()
      and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
    signal.signal(signal.SIGINT, lambda *_: os._exit(EXIT_INTERRUPTED))  # pylint: disable=protected-access


def _interrupt_with_keyboard_interrupt() -> None:
  """Ctrl-C raises KeyboardInterrupt again (the start-up exit is over)."""
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, signal.default_int_handler)


# Lines of a TensorFlow error that are not its reason: graph mode's header,
# the node's stack (its 'File "…"' lines), and placeholders such as
# '<stack traces unavailable>'.
_TF_NOISE = ('Graph execution', 'Detected at', 'File "', '<')
# tf.debugging.Assert's wrappers around its message: in a graph, then eagerly.
_ASSERT_WRAPPERS = (re.compile(r'^assertion failed: \[(.*)\]$'),
                    re.compile(r"^Expected .* to be true\. Summarized data: "
                               r"b?'(.*)'$"))


def tf_message(error: Exception) -> str:
  """An error's reason on one line, for one-line user errors.

  TensorFlow wraps the reason in decoration: node names in {{…}}, ' [Op:…]'
  tags, in graph mode a header and the node's stack, and around an Assert's
  message 'assertion failed: […]'. This is the first line left without
  them, its spaces collapsed; for any other exception its first line; its
  type's name when it has no text.
  """
  text = getattr(error, 'message', None) or str(error)
  for line in re.sub(r'\{\{[^}]*\}\}', '', text).splitlines():
    line = ' '.join(line.split(' [Op:')[0].split())
    if line and not line.startswith(_TF_NOISE):
      for wrapper in _ASSERT_WRAPPERS:
        line = wrapper.sub(r'\1', line)
      return line
  return type(error).__name__


def usable_cores() -> int:
  """The cores this process may use (a container's limit, not the host's)."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def size_text(size: Sequence[int]) -> str:
  """(400, 300) → '400x300': a size as the size flags take it."""
  return f'{size[0]}x{size[1]}'


def parse_size(text: str, flag: str) -> Tuple[int, int]:
  """A size flag: '400' or '400x300' (height x width) → (400, 400), (400, 300).

  Raises:
    UserError: naming --flag, for anything else.
  """
  parts = str(text).lower().replace('×', 'x').split('x')
  try:
    size = tuple(int(p) for p in parts)
  except ValueError:
    size = ()
  if len(size) == 1:
    size = size * 2
  if len(size) != 2 or min(size) < 1:
    raise UserError(f'--{flag}={text}: expected a size such as 400 or '
                    '400x300 (height x width)')
  return size


class Progress:
  """A one-line progress display on stderr: count, rate and time left.

  Redrawn in place (`\\r`) on a terminal. Elsewhere (logs, CI, tests) it stays
  silent until close(), which writes one final line, so logs are not flooded.
  """

  def __init__(self, total: int, label: str, *, enabled: bool = True,
               stream=None, interval_s: float = 0.2):
    self.total, self.label, self.enabled = total, label, enabled
    self.stream = stream if stream is not None else sys.stderr
    self.tty = enabled and hasattr(self.stream, 'isatty') and self.stream.isatty()
    self.interval_s = interval_s
    self.count = 0
    self.start = self._last_draw = time.monotonic()

  def update(self, n: int = 1) -> None:
    """Counts n more items done; redraws at most every interval_s on a TTY."""
    self.count += n
    now = time.monotonic()
    if self.tty and (now - self._last_draw >= self.interval_s
                     or self.count >= self.total):
      self._last_draw = now
      self.stream.write('\r' + self._line(now) + '\x1b[K')
      self.stream.flush()

  def close(self) -> None:
    """Writes the final line (count, seconds, rate), ending the `\\r` line."""
    if not self.enabled:
      return
    line = self._line(time.monotonic(), final=True)
    self.stream.write(f'\r{line}\x1b[K\n' if self.tty else line + '\n')
    self.stream.flush()

  def _line(self, now: float, final: bool = False) -> str:
    elapsed = max(now - self.start, 1e-9)
    rate = self.count / elapsed
    text = f'{self.label}: {self.count}/{self.total} ({rate:,.0f}/s'
    if final:
      return text + f', {elapsed:.1f} s)'
    eta = f'{(self.total - self.count) / rate:.0f} s left' if rate else '…'
    return text + f', {eta})'
