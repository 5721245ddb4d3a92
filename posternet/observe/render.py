"""Posters drawn with their genres: the one tile renderer.

A tile is a poster on white with caption lines beside or under it; a line is
text in a colour, with an optional probability bar under it. Two layouts are
made of tiles:

  poster_grid  the dashboards' val_posters image: tiles TILE_WIDTH wide,
               GRID_COLUMNS to a row, each poster above its Id, its true
               genres and its top 3 (green where a genre is true, red where
               not);
  poster_rows  predict --plot: one row per poster, scaled to ROW_HEIGHT, its
               file name and genres with probability bars beside it.
"""

import io
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from posternet import genres
from posternet import files

GRID_COLUMNS = 4
TILE_WIDTH = 200      # pixels per poster tile in the grid

# predict --plot: every poster is scaled to this height, its genres beside it.
ROW_HEIGHT = 300
PANEL_WIDTH = 320


class Line(NamedTuple):
  """One caption line."""
  text: str
  colour: str = 'black'
  bar: Optional[float] = None  # a probability, drawn as a bar under the text


class Style(NamedTuple):
  """How caption lines are drawn."""
  font_size: int
  line_height: int     # pixels from one line's top to the next one's
  bar_width: int = 0   # a bar's length at probability 1


_GRID_STYLE = Style(font_size=12, line_height=15)
# A row's line: its text and its bar.
_ROW_STYLE = Style(font_size=18, line_height=18 + 18,
                   bar_width=PANEL_WIDTH - 20)


def scaled(image, *, width: Optional[int] = None,
           height: Optional[int] = None) -> Image.Image:
  """The poster (uint8 [H, W, 3] or PIL) at a width or height, same aspect."""
  poster = image if isinstance(image, Image.Image) else Image.fromarray(image)
  if width is not None:
    height = max(1, round(width * poster.height / poster.width))
  else:
    width = max(1, round(poster.width * height / poster.height))
  return poster.resize((width, height), Image.Resampling.BILINEAR)


def tile(poster: Image.Image, lines: Sequence[Line], style: Style, *,
         size, caption_at) -> Image.Image:
  """A white (width, height) tile: the poster at its top left, then the lines.

  Args:
    poster: the poster, already scaled.
    lines: the caption, top to bottom.
    style: the lines' font size, spacing and bar length.
    size: the tile's (width, height).
    caption_at: (x, y) of the first line's top left.
  """
  image = Image.new('RGB', tuple(size), 'white')
  image.paste(poster, (0, 0))
  draw = ImageDraw.Draw(image)
  font = ImageFont.load_default(size=style.font_size)
  x, y = caption_at
  for line in lines:
    draw.text((x, y), line.text, fill=line.colour, font=font)
    if line.bar is not None:
      top = y + style.font_size + 3
      draw.rectangle([x, top, x + style.bar_width, top + 8], outline='gray')
      draw.rectangle([x, top, x + round(style.bar_width * line.bar), top + 8],
                     fill='steelblue')
    y += style.line_height
  return image


def arrange(tiles: Sequence[Image.Image], columns: int) -> Image.Image:
  """The tiles in rows of `columns`, in cells of the largest tile's size."""
  width = max(t.width for t in tiles)
  height = max(t.height for t in tiles)
  rows = -(-len(tiles) // columns)
  image = Image.new('RGB', (columns * width, rows * height), 'white')
  for i, t in enumerate(tiles):
    image.paste(t, ((i % columns) * width, (i // columns) * height))
  return image


# --- The dashboards' grid. ---


def poster_grid(images_: np.ndarray, labels: np.ndarray,
                probabilities: np.ndarray, ids: Sequence[str]) -> np.ndarray:
  """uint8 [H, W, 3]: each poster with its Id, true genres and top 3.

  A predicted genre that is a true genre is drawn green, others red.
  """
  tiles = [_grid_tile(image, label, prob, poster_id) for image, label, prob,
           poster_id in zip(images_, labels, probabilities, ids)]
  if not tiles:
    return np.full((_GRID_STYLE.line_height, TILE_WIDTH, 3), 255, np.uint8)
  return np.asarray(arrange(tiles, min(GRID_COLUMNS, len(tiles))))


def _grid_tile(image, label, probabilities, poster_id) -> Image.Image:
  """One poster, scaled to TILE_WIDTH, above its caption lines."""
  poster = scaled(image, width=TILE_WIDTH)
  true_names = ', '.join(genres.names_of(label)) or '(none)'
  lines = [Line(poster_id)] + [Line(text) for text in _wrap(
      'true: ' + true_names, _GRID_STYLE.font_size, TILE_WIDTH - 8)]
  for index, probability in genres.top_k(probabilities):
    lines.append(Line(f'{genres.GENRES[index]} {probability:.2f}',
                      'darkgreen' if label[index] > 0.5 else 'firebrick'))
  size = (TILE_WIDTH, poster.height + _GRID_STYLE.line_height * len(lines) + 6)
  return tile(poster, lines, _GRID_STYLE, size=size,
              caption_at=(4, poster.height + 3))


def _wrap(text: str, font_size: int, width: int) -> list:
  """Splits text at spaces into lines no wider than width pixels."""
  font = ImageFont.load_default(size=font_size)
  probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  lines, line = [], ''
  for word in text.split(' '):
    candidate = f'{line} {word}'.strip()
    if line and probe.textlength(candidate, font=font) > width:
      lines.append(line)
      candidate = word
    line = candidate
  return lines + [line]


# --- predict --plot. ---


def poster_rows(rows: Sequence, out_path: str) -> None:
  """Writes one image: per row a poster, then its genres with bars.

  Posters are scaled to ROW_HEIGHT; the genre panels line up at the widest
  poster.

  Args:
    rows: (path, poster uint8 [H, W, 3], [(genre, probability), …]) per
      poster; the path's file name is the row's title.
    out_path: the image file to write (atomically), PNG unless its name says
      otherwise.
  """
  posters = [scaled(image, height=ROW_HEIGHT) for _, image, _ in rows]
  left = max(poster.width for poster in posters)
  tiles = [tile(poster, _row_lines(os.path.basename(path), selected),
                _ROW_STYLE, size=(left + PANEL_WIDTH, ROW_HEIGHT),
                caption_at=(left + 10, 10))
           for (path, _, selected), poster in zip(rows, posters)]
  save(arrange(tiles, 1), out_path)


def _row_lines(title: str, selected: Sequence) -> list:
  """The file name, then `Drama (0.532)` and a bar per genre that fits."""
  fits = (ROW_HEIGHT - 20) // _ROW_STYLE.line_height - 1  # below the title
  shown = selected if len(selected) <= fits else selected[:fits - 1]
  lines = [Line(title)] + [Line(f'{name} ({p:.3f})', bar=p)
                           for name, p in shown]
  if len(shown) < len(selected):
    lines.append(Line(f'+{len(selected) - len(shown)} more'))
  return lines


def save(image: Image.Image, path: str) -> None:
  """Saves atomically, in the format the file name asks for (PNG otherwise)."""
  extension = os.path.splitext(path)[1].lower()
  encoded = io.BytesIO()
  image.save(encoded, format=Image.registered_extensions().get(extension,
                                                                'PNG'))
  files.write_atomically(path, encoded.getvalue())
