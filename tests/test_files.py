"""The one atomic-write helper: files and folders, whole or not at all."""

import os

import pytest

from posternet import files


def test_a_file_is_written_whole_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / 'summary.json')
  files.write_atomically(path, '{"old": 1}\n')
  files.write_atomically(path, b'{"new": 2}\n')
  assert open(path).read() == '{"new": 2}\n'
  assert os.listdir(tmp_path) == ['summary.json']


def test_a_failed_file_write_keeps_the_old_file(tmp_path):
  path = str(tmp_path / 'model.keras')
  files.write_atomically(path, 'old')
  with pytest.raises(RuntimeError):
    with files.atomic_path(path, temporary=str(tmp_path / 'partial.keras')
                           ) as partial:
      open(partial, 'w').write('half')
      raise RuntimeError('killed mid-write')
  assert open(path).read() == 'old'


def _fill(folder, text):
  os.makedirs(os.path.join(folder, 'saved_model'))
  open(os.path.join(folder, 'saved_model', 'a.pb'), 'w').write(text)


def test_a_folder_replaces_the_old_one_whole(tmp_path):
  path = str(tmp_path / 'export')
  with files.atomic_folder(path) as temporary:
    _fill(temporary, 'first')
    open(os.path.join(temporary, 'only_in_first'), 'w').write('x')
  with files.atomic_folder(path) as temporary:
    assert os.listdir(temporary) == []  # starts empty
    _fill(temporary, 'second')
  assert sorted(os.listdir(path)) == ['saved_model']  # nothing of the old
  assert open(os.path.join(path, 'saved_model', 'a.pb')).read() == 'second'
  assert os.listdir(tmp_path) == ['export']  # no .tmp, no .old left


def test_a_failed_folder_write_keeps_the_old_folder(tmp_path):
  path = str(tmp_path / 'export')
  with files.atomic_folder(path) as temporary:
    _fill(temporary, 'good')
  with pytest.raises(RuntimeError):
    with files.atomic_folder(path) as temporary:
      _fill(temporary, 'torn')
      raise RuntimeError('killed mid-write')
  assert open(os.path.join(path, 'saved_model', 'a.pb')).read() == 'good'
  # A killed writer's leftover is removed by the next write.
  assert os.path.isdir(files.temporary_name(path))
  with files.atomic_folder(path) as temporary:
    assert os.listdir(temporary) == []
    _fill(temporary, 'next')
  assert sorted(os.listdir(tmp_path)) == ['export']
