"""What the tests share: the repository, commands, free ports, record sets.

Fixtures:
  repo           the repository root (commands run there).
  run_module     runs `python -m MODULE ARGS` as a user would, from the
                 repository with its code first on PYTHONPATH; a finished
                 process with its output, or with start=True a running one.
  run_make       runs `make -s TARGET VAR=VALUE …` in the repository with this
                 Python as the Makefile's $(PY) and its set-up taken as done.
  free_port, free_ports
                 ports the OS says are free on 127.0.0.1.
  make_records   writes a small records folder (tests/record_fixtures.py)
                 into a fresh temporary folder; its records.Manifest.
  tiny_records   4 train and 2 val posters of 32×32, in a fresh folder.

The header also says which precision --precision=auto picks here. Machines
of this kind differ: CPUs with avx512_bf16/amx_bf16 train under
mixed_bfloat16, others under float32. The suite must pass under both, so it
can be forced either way on one machine (POSTERNET_PRECISION, which
--precision=auto obeys in every process the tests start):

  make test PRECISION=float32
  make test PRECISION=mixed_bfloat16
"""

import os
import socket
import subprocess
import sys
from typing import Callable, List, Mapping, Optional

import pytest

from posternet.train import hardware
from posternet.data import records
import record_fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_report_header(config):
  del config  # unused
  policy, reason = hardware.precision_here('auto')
  return f'posternet: --precision=auto is {policy} ({reason})'


@pytest.fixture(scope='session')
def repo() -> str:
  """The repository root."""
  return REPO


def _environment(env: Optional[Mapping[str, Optional[str]]]) -> dict:
  """os.environ with the repository first on PYTHONPATH, TF's C++ logs off.

  env's entries win; a None value removes the variable.
  """
  environment = dict(os.environ)
  environment.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  environment['PYTHONPATH'] = os.pathsep.join(
      p for p in (REPO, os.environ.get('PYTHONPATH')) if p)
  for name, value in (env or {}).items():
    if value is None:
      environment.pop(name, None)
    else:
      environment[name] = value
  return environment


def _run_module(module: str, *args: str, env=None, start: bool = False,
                timeout: float = 120, **kwargs):
  """`python -m module args` in the repository.

  Args:
    module: the module to run, e.g. 'posternet.train'.
    *args: its arguments.
    env: variables to set (None: remove) over this process's environment.
    start: return the running subprocess.Popen (stdout and stderr piped,
      text) instead of waiting for it.
    timeout: seconds to wait for it to finish (not with start).
    **kwargs: more subprocess arguments; stdout or stderr replace the
      captured pipes.

  Returns:
    subprocess.CompletedProcess (text, output captured unless redirected),
    or subprocess.Popen with start.
  """
  command = [sys.executable, '-m', module, *args]
  kwargs.setdefault('cwd', REPO)
  kwargs['env'] = _environment(env)
  kwargs.setdefault('text', True)
  if start:
    kwargs.setdefault('stdout', subprocess.PIPE)
    kwargs.setdefault('stderr', subprocess.PIPE)
    return subprocess.Popen(command, **kwargs)
  if 'stdout' not in kwargs and 'stderr' not in kwargs:
    kwargs['capture_output'] = True
  return subprocess.run(command, timeout=timeout, check=False, **kwargs)


@pytest.fixture(scope='session')
def run_module() -> Callable:
  """Runs `python -m MODULE ARGS` from the repository (see _run_module)."""
  return _run_module


def _run_make(target: str, *variables: str, env=None, start: bool = False,
              timeout: float = 300, **kwargs):
  """`make -s target variables` in the repository, as _run_module runs.

  PY is this Python; `-o .venv/.installed` takes `make setup` as done, so a
  test never creates or updates a virtual environment. start: the running
  process, in a session of its own (stop it with os.killpg).
  """
  command = ['make', '-s', '-o', '.venv/.installed', target,
             f'PY={sys.executable}', *variables]
  kwargs.setdefault('cwd', REPO)
  kwargs['env'] = _environment(env)
  kwargs.setdefault('text', True)
  if start:
    kwargs.setdefault('stdout', subprocess.PIPE)
    kwargs.setdefault('stderr', subprocess.PIPE)
    return subprocess.Popen(command, start_new_session=True, **kwargs)
  if 'stdout' not in kwargs and 'stderr' not in kwargs:
    kwargs['capture_output'] = True
  return subprocess.run(command, timeout=timeout, check=False, **kwargs)


@pytest.fixture(scope='session')
def run_make() -> Callable:
  """Runs `make -s TARGET VAR=VALUE …` in the repository (see _run_make)."""
  return _run_make


def _free_ports(count: int) -> List[int]:
  """Ports the OS says are free on 127.0.0.1 (bound, read, released)."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(('127.0.0.1', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


@pytest.fixture(scope='session')
def free_ports() -> Callable[[int], List[int]]:
  """free_ports(n): n distinct free ports on 127.0.0.1."""
  return _free_ports


@pytest.fixture(scope='session')
def free_port() -> Callable[[], int]:
  """free_port(): one free port on 127.0.0.1."""
  return lambda: _free_ports(1)[0]


@pytest.fixture(scope='session')
def make_records(tmp_path_factory) -> Callable[..., records.Manifest]:
  """make_records(name='records', **options): a new records folder's handle.

  The options are record_fixtures.write_records's (num_train, num_val,
  image_hw, num_shards, seed, store_size, store_format, compression); the
  folder is a fresh temporary one named after `name`.
  """

  def make(name: str = 'records', **options) -> records.Manifest:
    folder = str(tmp_path_factory.mktemp(name))
    return record_fixtures.write_records(folder, **options)

  return make


@pytest.fixture
def tiny_records(make_records) -> records.Manifest:
  """4 train and 2 val posters of 32×32 (2 shards, then 1), seed 0."""
  return make_records('tiny', num_train=4, num_val=2)
