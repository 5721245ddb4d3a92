"""Synthetic label vectors with the real set's label counts and genre shares.

A poster has 1, 2 or 3 genres in the real proportions, and each genre comes
up as often as in the real set: draws are weighted, without replacement, with
weights fitted to the real shares (sample_labels).
"""

import functools

import numpy as np

from posternet import genres

# Real label counts: 1, 2 or 3 genres per poster (real_sample/README.md).
LABEL_COUNT_SHARES = (0.18, 0.31, 0.51)

# Real share of posters with each genre (real_sample/README.md).
GENRE_FREQUENCY = {
    'Drama': 0.499, 'Comedy': 0.400, 'Action': 0.185, 'Romance': 0.184,
    'Crime': 0.162, 'Thriller': 0.127, 'Adventure': 0.120,
    'Documentary': 0.090, 'Horror': 0.069, 'Fantasy': 0.064, 'Mystery': 0.063,
    'Biography': 0.061, 'Family': 0.060, 'Sci-Fi': 0.055, 'Music': 0.042,
    'Animation': 0.034, 'History': 0.031, 'Sport': 0.030, 'War': 0.020,
    'Musical': 0.013, 'Western': 0.007, 'Short': 0.006, 'News': 0.003,
    'N/A': 0.001, 'Reality-TV': 0.0003,
}


def _inclusion_probabilities(weights: np.ndarray) -> np.ndarray:
  """P(genre is among the first k draws), k = 1, 2, 3, for weighted draws.

  Draws are successive, without replacement, each proportional to the weights
  of the genres left (what the Gumbel top-k trick in sample_labels does).

  Returns:
    [3, NUM_GENRES]: row k-1 holds the probabilities for k draws.
  """
  w = weights / weights.sum()
  n = len(w)
  first = w
  not_j = 1.0 - w  # Weight left after genre j was drawn first.
  # pair[j, l]: j first, then l.
  pair = w[:, None] * w[None, :] / not_j[:, None]
  np.fill_diagonal(pair, 0.0)
  second = pair.sum(axis=0)
  left = 1.0 - w[:, None] - w[None, :]  # Weight left after j and l.
  third = np.zeros(n)
  for i in range(n):
    valid = np.ones((n, n), bool)
    np.fill_diagonal(valid, False)
    valid[i, :] = valid[:, i] = False
    third[i] = np.sum(np.where(valid, pair * w[i] / np.where(valid, left, 1.0),
                               0.0))
  return np.cumsum([first, second, third], axis=0)


@functools.lru_cache(maxsize=None)
def _genre_log_weights() -> np.ndarray:
  """Draw weights calibrated so each genre's marginal matches the real share.

  Drawing k genres proportionally to the real shares would flatten them (a
  common genre cannot be drawn twice), so the weights are fitted by a few
  multiplicative updates on the exact inclusion probabilities.
  """
  target = np.array([GENRE_FREQUENCY[g] for g in genres.GENRES])
  mean_count = np.dot(LABEL_COUNT_SHARES, [1, 2, 3])
  target *= mean_count / target.sum()  # The shares must add up to the count.
  weights = target.copy()
  for _ in range(200):
    marginal = np.dot(LABEL_COUNT_SHARES, _inclusion_probabilities(weights))
    weights *= target / marginal
    weights /= weights.sum()
  return np.log(weights)


def sample_labels(rng: np.random.Generator, num_posters: int) -> np.ndarray:
  """Draws multi-hot labels with the real label counts and genre frequencies.

  Args:
    rng: the random generator to draw from.
    num_posters: how many label vectors to draw.

  Returns:
    float32 [num_posters, NUM_GENRES], 1 to 3 ones per row.
  """
  counts = rng.choice(3, size=num_posters, p=LABEL_COUNT_SHARES) + 1
  # Gumbel top-k: the k largest perturbed log-weights are k successive
  # weighted draws without replacement.
  keys = _genre_log_weights() + rng.gumbel(size=(num_posters, genres.NUM_GENRES))
  rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
  return (rank < counts[:, None]).astype(np.float32)
