"""The 25 genres of the tutorial's dataset and the label vectors built from them.

The order is the CSV's column order; every label vector, record and model
output in posternet uses it.
"""

from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

# The tutorial CSV's one-hot columns, in its order. 'N/A' is a real column.
GENRES = (
    'Action', 'Adventure', 'Animation', 'Biography', 'Comedy', 'Crime',
    'Documentary', 'Drama', 'Family', 'Fantasy', 'History', 'Horror', 'Music',
    'Musical', 'Mystery', 'N/A', 'News', 'Reality-TV', 'Romance', 'Sci-Fi',
    'Short', 'Sport', 'Thriller', 'War', 'Western',
)
NUM_GENRES = len(GENRES)

# The CSV's first two columns, before the genre columns.
ID_COLUMN = 'Id'
GENRE_COLUMN = 'Genre'
CSV_COLUMNS = (ID_COLUMN, GENRE_COLUMN) + GENRES

# The tutorial shows each poster's 3 most likely genres.
TOP_K = 3


def normalize_header(names: Iterable[str]) -> list:
  """Strips spaces around column names: copies of the data have ' Sport'."""
  return [str(name).strip() for name in names]


def genre_string(names: Sequence[str]) -> str:
  """The tutorial's `Genre` cell: a Python list literal, "['Comedy', 'Drama']"."""
  return str(list(names))


def names_of(labels: Sequence[float]) -> list:
  """The genre names whose entry in a 25-dim multi-hot vector is set."""
  return [GENRES[i] for i in np.flatnonzero(np.asarray(labels) > 0.5)]


def top_k(probabilities: Sequence[float],
          k: Optional[int] = TOP_K) -> List[Tuple[int, float]]:
  """[(genre index, probability)] of the k most likely genres, most first.

  Ties keep the genres' order, so the same probabilities always list the
  same genres.

  Args:
    probabilities: [25] one poster's probabilities.
    k: how many; None ranks all of them.
  """
  probabilities = np.asarray(probabilities)
  order = np.argsort(-probabilities, kind='stable')[:k]
  return [(int(i), float(probabilities[i])) for i in order]
