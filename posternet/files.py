"""Files: written whole or not at all, read only when plain, folders locked.

Writes, of files (write_atomically, atomic_path) and of folders
(atomic_folder), by every writer in posternet: a run killed mid-write leaves
at most `<name>.tmp` beside the file or folder, never a torn one under the
final name. The temporary name is fixed, so the next run that writes the
same file overwrites it, and cleanup code knows a leftover by its
final_name. Everything goes through tf.io.gfile, so gs://
(and any scheme TensorFlow has registered) works as local paths do.

Reads of files a user names (posters): a FIFO or device named `x.jpg` would
block open() or read() forever, and a symlink may point anywhere (say
/etc/passwd). read_regular_file resolves and checks a path before opening it.

Folders: FolderLock holds a local folder for one writer (fcntl.flock); a
second one learns at once who holds it.
"""

import contextlib
import fcntl
import os
import re
import stat
import time
from typing import Iterator, Optional, Union

import tensorflow as tf

from posternet import remote

TEMPORARY_SUFFIX = '.tmp'
# Where atomic_folder moves the folder it replaces, for the moment it takes.
OLD_SUFFIX = '.old'

# A leftover temporary file: this module's, or an older release's
# `<name>.tmp-<pid>`.
_TEMPORARY = re.compile(r'\.tmp(-\d+)?$')


def temporary_name(path: str) -> str:
  """Where `path` is written before it is renamed into place."""
  return path + TEMPORARY_SUFFIX


def final_name(name: str) -> str:
  """The name a temporary file was to get; any other name as it is."""
  return _TEMPORARY.sub('', name)


@contextlib.contextmanager
def atomic_path(path: str, temporary: Optional[str] = None) -> Iterator[str]:
  """Yields the temporary name to write; renames it to `path` at the end.

  For writers that need a path (a TFRecordWriter, Keras' save). `temporary`
  names the file written first where the writer insists on a suffix (Keras:
  .keras, .weights.h5); default <path>.tmp. When the block raises, nothing
  is renamed and the error goes on.
  """
  temporary = temporary or temporary_name(path)
  yield temporary
  tf.io.gfile.rename(temporary, path, overwrite=True)


def new_temporary_folder(path: str) -> str:
  """An empty <path>.tmp to fill (a killed writer's leftover removed first).

  Raises:
    tf.errors.OpError: it cannot be made (a file in the way, no permission).
  """
  temporary = temporary_name(path)
  if tf.io.gfile.exists(temporary):
    tf.io.gfile.rmtree(temporary)
  tf.io.gfile.makedirs(temporary)
  return temporary


@contextlib.contextmanager
def atomic_folder(path: str,
                  temporary: Optional[str] = None) -> Iterator[str]:
  """Yields an empty temporary folder to fill; it replaces `path` at the end.

  `temporary`: the new_temporary_folder(path) the caller made already (to
  say in its own words why it could not); default: made here.

  An older folder at path is moved aside (<path>.old), the new one renamed
  into place, then the old one removed: path holds the old folder or the
  new one, whole, at every instant but the one between the two renames.
  When the block raises, path keeps what it held and nothing is renamed.
  """
  temporary = temporary or new_temporary_folder(path)
  yield temporary
  old = path + OLD_SUFFIX
  if tf.io.gfile.exists(old):
    tf.io.gfile.rmtree(old)
  if tf.io.gfile.exists(path):
    tf.io.gfile.rename(path, old)
  tf.io.gfile.rename(temporary, path)
  if tf.io.gfile.exists(old):
    tf.io.gfile.rmtree(old)


def write_atomically(path: str, data: Union[str, bytes]) -> None:
  """Writes text (UTF-8) or bytes to path: all of it, or nothing new there.

  Raises:
    tf.errors.OpError: the folder is missing or not writable.
  """
  with atomic_path(path) as temporary:
    with tf.io.gfile.GFile(temporary,
                           'wb' if isinstance(data, bytes) else 'w') as f:
      f.write(data)


# --- Reading a file a user named. ---


class NotARegularFile(Exception):
  """A folder, FIFO, socket or device where a file was expected."""

  def __init__(self, kind: str):
    super().__init__(f'{kind}, not a regular file')
    self.kind = kind  # 'a FIFO (named pipe)', …


class OutsideFolder(Exception):
  """A path (a symlink, mostly) that resolves outside the folder it must be in."""


# What a non-regular file is, for messages.
_KINDS = ((stat.S_ISDIR, 'a folder'), (stat.S_ISFIFO, 'a FIFO (named pipe)'),
          (stat.S_ISSOCK, 'a socket'), (stat.S_ISCHR, 'a character device'),
          (stat.S_ISBLK, 'a block device'))


def read_regular_file(path: str, inside: Optional[str] = None) -> bytes:
  """The bytes of a regular file, checked before anything is opened.

  Raises what open_regular_file raises, and OSError or tf.errors.OpError
  when it cannot be read.
  """
  with open_regular_file(path, inside) as f:
    return f.read()


@contextlib.contextmanager
def open_regular_file(path: str, inside: Optional[str] = None) -> Iterator:
  """A regular file opened for binary reading, checked before it is opened.

  The real path (links resolved) must lie inside `inside` when given, and
  stat must say it is a regular file; then it is opened non-blocking and
  checked again (it may have been swapped in between). URLs (gs://) have
  neither FIFOs nor links: they are opened as they are.

  Raises:
    FileNotFoundError or tf.errors.NotFoundError: no such file.
    OutsideFolder: the real path is outside `inside`.
    NotARegularFile: a folder, FIFO, socket or device.
  """
  if remote.scheme(path):
    with tf.io.gfile.GFile(path, 'rb') as f:
      yield f
    return
  real = os.path.realpath(path)
  if inside is not None:
    folder = os.path.realpath(inside)
    if os.path.commonpath([real, folder]) != folder:
      raise OutsideFolder(f'it leads to {real}')
  _check_regular(os.stat(real).st_mode)
  descriptor = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
  with open(descriptor, 'rb') as f:
    _check_regular(os.fstat(f.fileno()).st_mode)
    yield f


def _check_regular(mode: int) -> None:
  if not stat.S_ISREG(mode):
    kind = next((name for test, name in _KINDS if test(mode)),
                'a special file')
    raise NotARegularFile(kind)


# --- One writer per folder. ---


class FolderBusy(Exception):
  """Another process holds the folder's lock; `pid` is its id, or None."""

  def __init__(self, pid: Optional[int]):
    super().__init__(f'held by pid {pid}')
    self.pid = pid


# Tries to lock a lock file that its last holder removed meanwhile.
_LOCK_ATTEMPTS = 20
# How long to wait for a new holder to write its pid into the lock file.
_PID_WAIT_S = 1.0


class FolderLock:
  """An exclusive lock on a local folder, held until release() (or `with`).

  fcntl.flock on `folder/name`, a file that holds the holder's pid, so a
  second process can say who holds it. The kernel drops the lock when the
  holder dies, even by kill -9, so a stale lock file never blocks anyone.
  The file is removed on release while still held; a process that opened it
  just before finds it unlinked (other inode) and tries the new one. URLs
  (gs://) have no flock: there the lock holds nothing.
  """

  def __init__(self, folder: str, name: str):
    """Takes the lock at once, or raises.

    Raises:
      FolderBusy: another process holds it.
      OSError: the lock file cannot be created.
    """
    self._path = None if remote.scheme(folder) else os.path.join(folder, name)
    self._descriptor = self._lock(self._path) if self._path else None

  def release(self) -> None:
    """Removes the lock file and drops the lock (once)."""
    if self._descriptor is None:
      return
    with contextlib.suppress(FileNotFoundError):
      os.unlink(self._path)
    os.close(self._descriptor)
    self._descriptor = None

  def __enter__(self) -> 'FolderLock':
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()

  @staticmethod
  def _lock(path: str) -> int:
    """The lock file's descriptor, locked and holding this process's pid."""
    for _ in range(_LOCK_ATTEMPTS):
      descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
      try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _holder(descriptor)
        os.close(descriptor)
        raise FolderBusy(holder) from None
      except OSError:
        os.close(descriptor)
        raise
      if _is_current(descriptor, path):
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f'{os.getpid()}\n'.encode())
        return descriptor
      os.close(descriptor)  # its holder removed it as we opened it: again
    raise FolderBusy(None)


def _is_current(descriptor: int, path: str) -> bool:
  """Whether the open file is still the one at path (not unlinked since)."""
  try:
    return os.path.samestat(os.fstat(descriptor), os.stat(path))
  except FileNotFoundError:
    return False


def _holder(descriptor: int) -> Optional[int]:
  """The pid in a lock file; a new holder may take a moment to write it."""
  deadline = time.monotonic() + _PID_WAIT_S
  while True:
    text = os.pread(descriptor, 32, 0).decode(errors='replace').strip()
    if text.isdigit() or time.monotonic() > deadline:
      return int(text) if text.isdigit() else None
    time.sleep(0.05)
