"""The tutorial's CSV, read and checked, and the tutorial's train/val split.

The converter's first step (posternet/convert.py): the CSV (Id, Genre, then
the 25 genre columns; header names compared without surrounding spaces)
becomes a Table of Ids and float32 label rows, with each Id's first row
marked. Identical duplicate rows are kept (the split counts them, as the
tutorial's did); the same Id with other labels is an error. Every mistake is
one cli.UserError naming the file and line. Nothing is written here.
"""

import dataclasses
import hashlib
import io
import math
import os
from typing import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from posternet import cli
from posternet import genres
from posternet import remote

# The tutorial's name for the CSV, and the downloadable archive's.
CSV_NAMES = ('multi_label_train.csv', 'train.csv')
# Poster file names: Images/<Id>.jpg.
IMAGE_SUFFIX = '.jpg'


# ----------------------------------------------------------------- the split


def tutorial_split(num_rows: int, val_fraction: float = 0.1,
                   seed: int = 42) -> tuple:
  """The tutorial's train_test_split(test_size=val_fraction, random_state=seed).

  scikit-learn's ShuffleSplit draws RandomState(seed).permutation(n); the first
  ceil(val_fraction * n) indices are the test (here: val) set, the rest train,
  both in permutation order. Reproduced so results compare with the tutorial's.

  Args:
    num_rows: n, the CSV's rows, duplicates included (as the tutorial saw them).
    val_fraction: the validation share, 0 < val_fraction < 1.
    seed: the tutorial's random_state.

  Returns:
    (train_indices, val_indices), int64 arrays of row indices.
  """
  if not 0 < val_fraction < 1:
    raise ValueError(f'val_fraction must be in (0, 1), not {val_fraction}')
  permutation = np.random.RandomState(seed).permutation(num_rows)
  num_val = math.ceil(val_fraction * num_rows)
  return permutation[num_val:], permutation[:num_val]


# ------------------------------------------------------------------- the CSV


@dataclasses.dataclass(frozen=True)
class Table:
  """The CSV, checked: one entry per row, duplicates included."""
  ids: list            # str per row
  labels: np.ndarray   # float32 [rows, 25]
  first: np.ndarray    # bool per row: the first row with its Id
  sha256: str
  name: str            # the CSV's file name, for the manifest

  @property
  def num_rows(self) -> int:
    return len(self.ids)


def line_of(row: int) -> int:
  """The CSV line of a data row (line 1 is the header)."""
  return row + 2


def find_inputs(data_dir: str) -> tuple:
  """The CSV and Images/ inside a folder laid out like Multi_Label_dataset/.

  Returns:
    (csv_path, images_dir).
  """
  remote.check_path(data_dir, '--data_dir')
  if not tf.io.gfile.isdir(data_dir):
    raise cli.UserError(f'--data_dir {data_dir} is not a folder')
  found = [os.path.join(data_dir, name) for name in CSV_NAMES
           if tf.io.gfile.exists(os.path.join(data_dir, name))]
  if not found:
    raise cli.UserError(f'{data_dir} holds neither {" nor ".join(CSV_NAMES)}; '
                        'give the CSV with --csv and the posters with --images')
  if len(found) > 1:
    raise cli.UserError(f'{data_dir} holds both {" and ".join(CSV_NAMES)}; '
                        'say which one with --csv (and --images)')
  return found[0], os.path.join(data_dir, 'Images')


def read_csv(csv_path: str) -> Table:
  """Reads and checks the tutorial's CSV; every mistake names its line.

  Raises:
    cli.UserError: the file is missing or empty, the header is not Id, Genre
      and the 25 genres, a label is not 0/1, a row has no genre, an Id is not
      a plain file name, or one Id has two different label rows.
  """
  data = _read_bytes(csv_path)
  frame = _parse_csv(csv_path, data)
  _check_header(csv_path, frame.columns)
  frame.columns = genres.normalize_header(frame.columns)
  labels = _labels(csv_path, frame)
  ids = frame[genres.ID_COLUMN].tolist()
  for row, poster_id in enumerate(ids):
    _check_id(csv_path, row, poster_id)
  return Table(ids=ids, labels=labels, first=_first_rows(csv_path, ids, labels),
               sha256=hashlib.sha256(data).hexdigest(),
               name=os.path.basename(csv_path))


def _read_bytes(csv_path: str) -> bytes:
  if not tf.io.gfile.exists(csv_path):
    raise cli.UserError(f'CSV file {csv_path} not found')
  if tf.io.gfile.isdir(csv_path):
    raise cli.UserError(f'{csv_path} is a folder, not the CSV file')
  try:
    with tf.io.gfile.GFile(csv_path, 'rb') as f:
      return f.read()
  except tf.errors.OpError as e:
    raise cli.UserError(
        f'cannot read {csv_path}: {cli.tf_message(e)}') from None


def _parse_csv(csv_path: str, data: bytes) -> pd.DataFrame:
  """All cells as text, nothing turned into NaN behind our back."""
  if not data.strip():
    raise cli.UserError(f'{csv_path} is empty; expected the header Id, Genre, '
                        'then the 25 genre columns')
  try:
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False,
                        na_filter=False, encoding='utf-8-sig')
  except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
    message = str(e).strip().splitlines()[-1]
    raise cli.UserError(
        f'{csv_path} is not a readable CSV: {message}') from None
  if frame.empty:
    raise cli.UserError(f'{csv_path} has a header but no rows')
  return frame


def _check_header(csv_path: str, columns: Sequence[str]) -> None:
  """Names compared after stripping spaces: copies of the data have ' Sport'."""
  names = genres.normalize_header(columns)
  missing = [c for c in genres.CSV_COLUMNS if c not in names]
  unknown = [c for c in names if c not in genres.CSV_COLUMNS]
  repeated = sorted({c for c in names if names.count(c) > 1})
  problems = []
  if missing:
    problems.append('missing column(s) ' + ', '.join(map(repr, missing)))
  if unknown:
    problems.append('unknown column(s) ' + ', '.join(map(repr, unknown)))
  if repeated:
    problems.append('repeated column(s) ' + ', '.join(map(repr, repeated)))
  if problems:
    raise cli.UserError(
        f'{csv_path}: header: {"; ".join(problems)} (expected Id, Genre and '
        f'the 25 genres: {", ".join(genres.GENRES)})')


def _labels(csv_path: str, frame: pd.DataFrame) -> np.ndarray:
  """The 25 one-hot columns as float32; a cell other than 0/1 is an error."""
  cells = frame.loc[:, list(genres.GENRES)].to_numpy(dtype=str)
  cells = np.char.strip(cells)
  ones = np.isin(cells, ('1', '1.0'))
  valid = ones | np.isin(cells, ('0', '0.0'))
  ids = frame[genres.ID_COLUMN].tolist()
  if not valid.all():
    row, column = np.argwhere(~valid)[0]
    cell = str(cells[row, column])
    raise cli.UserError(
        f'{csv_path}: line {line_of(row)} (Id {ids[row]!r}): column '
        f'{genres.GENRES[column]!r} is {cell!r}; labels must be 0 or 1')
  empty = np.flatnonzero(~ones.any(axis=1))
  if empty.size:
    row = empty[0]
    raise cli.UserError(f'{csv_path}: line {line_of(row)} (Id {ids[row]!r}) '
                        'has no genre: all 25 genre columns are 0')
  return ones.astype(np.float32)


def _check_id(csv_path: str, row: int, poster_id: str) -> None:
  """An Id names a file inside --images: no path, nothing outside it opened."""
  bad = (not poster_id or poster_id != poster_id.strip()
         or poster_id in ('.', '..')
         or any(c in poster_id for c in ('/', '\\', '\0', os.sep)))
  if bad:
    raise cli.UserError(
        f'{csv_path}: line {line_of(row)}: Id {poster_id!r} is not a plain '
        f'file name (the poster must be Images/<Id>{IMAGE_SUFFIX})')


def _first_rows(csv_path: str, ids: Sequence[str],
                labels: np.ndarray) -> np.ndarray:
  """Marks each Id's first row; repeats must carry the same labels."""
  first_row = {}
  first = np.zeros(len(ids), bool)
  for row, poster_id in enumerate(ids):
    earlier = first_row.setdefault(poster_id, row)
    if earlier == row:
      first[row] = True
    elif not np.array_equal(labels[earlier], labels[row]):
      raise cli.UserError(
          f'{csv_path}: Id {poster_id!r} on line {line_of(row)} has other '
          f'labels than on line {line_of(earlier)} '
          f'({genres.names_of(labels[row])} vs '
          f'{genres.names_of(labels[earlier])})')
  return first
