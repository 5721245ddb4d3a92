"""The tutorial's CSV, read and checked, and the tutorial's train/val split.

The converter's first step (posternet/data/convert.py): the CSV (Id, Genre, then
the 25 genre columns; comma-separated, UTF-8; header names compared without
surrounding spaces) becomes a Table of Ids and float32 label rows, with each
Id's first row marked. Identical duplicate rows are kept (the split counts
them, as the tutorial's did); the same Id with other labels is an error.

The labels are the 25 one-hot columns. The Genre cell, a list such as
"['Comedy', 'Drama']", says the same in words: it is checked against them,
and a Genre that is no such list, or names other genres, is an error (the
real data's Genre always agrees).

Every mistake is one cli.UserError naming the file and the physical line
(blank lines and quoted line breaks counted, as an editor counts them).
Nothing is written here.
"""

import csv
import dataclasses
import hashlib
import io
import math
import os
import unicodedata
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from posternet import cli
from posternet import genres
from posternet import remote
from posternet.data import records

# The tutorial's name for the CSV, and the downloadable archive's.
CSV_NAMES = ('multi_label_train.csv', 'train.csv')
# Poster file names: Images/<Id>.jpg.
IMAGE_SUFFIX = '.jpg'


# ----------------------------------------------------------------- the split


def tutorial_split(num_rows: int,
                   val_fraction: float = records.SplitRule.val_fraction,
                   seed: int = records.SplitRule.seed) -> tuple:
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
  lines: tuple         # int per row: the physical line where it starts
  sha256: str
  name: str            # the CSV's file name, for the manifest

  @property
  def num_rows(self) -> int:
    return len(self.ids)

  def line_of(self, row: int) -> int:
    """The CSV line of a data row, as an editor numbers it (header: 1)."""
    return self.lines[row]


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
    cli.UserError: the file is missing, empty or not comma-separated UTF-8
      text, the header is not Id, Genre and the 25 genres, a row has another
      number of cells (an unquoted Genre list, say), a label is not 0/1, a
      row has no genre, an Id is not a plain file name, a Genre cell is no
      list of the row's genres, or one Id has two different label rows.
  """
  data = _read_bytes(csv_path)
  header, rows, lines = _parse_csv(csv_path, data)
  _check_header(csv_path, header)
  column = {name: i for i, name in enumerate(genres.normalize_header(header))}
  ids = [cells[column[genres.ID_COLUMN]] for cells in rows]
  labels = _labels(csv_path, rows, column, ids, lines)
  for row, poster_id in enumerate(ids):
    _check_id(csv_path, lines[row], poster_id)
    _check_genre_cell(csv_path, lines[row], poster_id,
                      rows[row][column[genres.GENRE_COLUMN]], labels[row])
  return Table(ids=ids, labels=labels,
               first=_first_rows(csv_path, ids, labels, lines),
               lines=tuple(lines), sha256=hashlib.sha256(data).hexdigest(),
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


def _parse_csv(csv_path: str, data: bytes) -> Tuple[list, list, list]:
  """(header cells, data rows' cells, each row's first physical line).

  Python's csv module, not pandas: it counts physical lines (pandas skips
  blank lines and loses count), and it leaves a row with too many cells
  alone (pandas would quietly take the first cell for an index and shift
  the columns). Cells stay text; blank lines are skipped.
  """
  if not data.strip():
    raise cli.UserError(f'{csv_path} is empty; expected the header Id, Genre, '
                        'then the 25 genre columns')
  try:
    text = data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise cli.UserError(f'{csv_path} is not a readable CSV: not UTF-8 text '
                        f'(byte {e.start}: {e.reason})') from None
  reader = csv.reader(io.StringIO(text, newline=''), strict=True)
  rows, lines, end = [], [], 0
  try:
    for cells in reader:
      start, end = end + 1, reader.line_num
      if cells:
        rows.append(cells)
        lines.append(start)
  except csv.Error as e:
    raise cli.UserError(f'{csv_path}: line {reader.line_num}: not a '
                        f'readable CSV: {e}') from None
  header = rows.pop(0)
  header_line = lines.pop(0)
  _check_separator(csv_path, header)
  if not rows:
    raise cli.UserError(f'{csv_path} has a header but no rows')
  for cells, line in zip(rows, lines):
    _check_cell_count(csv_path, line, cells, len(header), header_line)
  return header, rows, lines


def _check_separator(csv_path: str, header: Sequence[str]) -> None:
  """A header of one cell with ';' or tabs in it: another separator."""
  if len(header) != 1:
    return
  for separator, name in ((';', "';'"), ('\t', 'tab')):
    if header[0].count(separator) >= 2:
      raise cli.UserError(
          f'{csv_path}: the file looks {name}-separated (its header is one '
          f'cell, {header[0][:40]!r}…); posternet reads the tutorial\'s '
          'comma-separated CSV: save it with commas')


def _check_cell_count(csv_path: str, line: int, cells: Sequence[str],
                      expected: int, header_line: int) -> None:
  """Each row has as many cells as the header; an unquoted Genre is named."""
  if len(cells) == expected:
    return
  where = f'{csv_path}: line {line} (Id {cells[0]!r})'
  genre = cells[1].strip() if len(cells) > 1 else ''
  if len(cells) > expected and genre.startswith('[') and not genre.endswith(
      ']'):
    raise cli.UserError(
        f'{where}: its Genre list holds commas but is not in quotes, so the '
        f'row has {len(cells)} cells, not {expected}; quote it as the '
        'tutorial\'s CSV does: "[\'Comedy\', \'Drama\']"')
  raise cli.UserError(f'{where} has {len(cells)} cells; the header (line '
                      f'{header_line}) has {expected}')


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


def _labels(csv_path: str, rows: Sequence[Sequence[str]], column: dict,
            ids: Sequence[str], lines: Sequence[int]) -> np.ndarray:
  """The 25 one-hot columns as float32; a cell other than 0/1 is an error."""
  indices = [column[name] for name in genres.GENRES]
  cells = np.char.strip(np.array([[cells[i] for i in indices]
                                  for cells in rows], dtype=str))
  ones = np.isin(cells, ('1', '1.0'))
  valid = ones | np.isin(cells, ('0', '0.0'))
  if not valid.all():
    row, genre = np.argwhere(~valid)[0]
    raise cli.UserError(
        f'{csv_path}: line {lines[row]} (Id {ids[row]!r}): column '
        f'{genres.GENRES[genre]!r} is {str(cells[row, genre])!r}; labels '
        'must be 0 or 1')
  empty = np.flatnonzero(~ones.any(axis=1))
  if empty.size:
    row = empty[0]
    raise cli.UserError(f'{csv_path}: line {lines[row]} (Id {ids[row]!r}) '
                        'has no genre: all 25 genre columns are 0')
  return ones.astype(np.float32)


def _check_id(csv_path: str, line: int, poster_id: str) -> None:
  """An Id names a file inside --images: no path, nothing outside it opened.

  Control characters (a newline, say) are refused too: no poster file is
  named so, and they would garble every message and report naming the Id.
  """
  bad = (not poster_id or poster_id != poster_id.strip()
         or poster_id in ('.', '..')
         or any(c in poster_id for c in ('/', '\\', os.sep))
         or any(unicodedata.category(c) == 'Cc' for c in poster_id))
  if bad:
    raise cli.UserError(
        f'{csv_path}: line {line}: Id {poster_id!r} is not a plain '
        f'file name (the poster must be Images/<Id>{IMAGE_SUFFIX})')


def _genre_names(cell: str) -> Optional[List[str]]:
  """The names in a Genre cell such as "['Comedy', 'Drama']", else None.

  Parsed by hand: nothing read from a CSV is ever evaluated.
  """
  text = cell.strip()
  if not (text.startswith('[') and text.endswith(']')):
    return None
  inner = text[1:-1].strip()
  if not inner:
    return []
  names = []
  for item in inner.split(','):
    item = item.strip()
    if len(item) < 2 or item[0] not in '\'"' or item[-1] != item[0]:
      return None
    names.append(item[1:-1])
  return names


def _check_genre_cell(csv_path: str, line: int, poster_id: str, cell: str,
                      labels: np.ndarray) -> None:
  """The Genre cell must list exactly the genres the one-hot columns set.

  The columns are the labels (what is stored and trained on); the cell is
  checked, never used, so a disagreement is an error rather than a guess.
  """
  where = f'{csv_path}: line {line} (Id {poster_id!r})'
  names = _genre_names(cell)
  if names is None:
    raise cli.UserError(f'{where}: Genre {cell!r} is not a list of genres '
                        'such as "[\'Comedy\', \'Drama\']"')
  columns = genres.names_of(labels)
  if sorted(set(names)) != sorted(columns):
    raise cli.UserError(
        f'{where}: Genre {cell!r} disagrees with the genre columns, which '
        f'set {", ".join(columns)}; the columns are the labels: correct '
        'whichever is wrong')


def _first_rows(csv_path: str, ids: Sequence[str], labels: np.ndarray,
                lines: Sequence[int]) -> np.ndarray:
  """Marks each Id's first row; repeats must carry the same labels."""
  first_row = {}
  first = np.zeros(len(ids), bool)
  for row, poster_id in enumerate(ids):
    earlier = first_row.setdefault(poster_id, row)
    if earlier == row:
      first[row] = True
    elif not np.array_equal(labels[earlier], labels[row]):
      raise cli.UserError(
          f'{csv_path}: Id {poster_id!r} on line {lines[row]} has other '
          f'labels than on line {lines[earlier]} '
          f'({genres.names_of(labels[row])} vs '
          f'{genres.names_of(labels[earlier])})')
  return first
