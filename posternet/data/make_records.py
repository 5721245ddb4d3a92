r"""Converts the tutorial's CSV and Images/ folder to sharded TFRecords.

`make records`, or:

  python -m tools.make_records --data_dir=path/Multi_Label_dataset \
      --out=records/
  python -m tools.make_records --csv=path/multi_label_train.csv \
      --images=path/Images --out=records/ [--store_size=400x400] \
      [--store_format=raw]
  python -m tools.make_records --verify=records/

It writes train-00000-of-000NN.tfrecord …, val-… and, last, manifest.json;
--verify reads a finished folder back and exits 0 only when all is well.
"""

# (A comment, not the docstring: the docstring is the command's --help.)
# The command: its flags and main. The work is posternet/data/convert.py (the
# conversion: what it writes, the split, the shard rule, resume) and
# posternet/data/verify.py (--verify); posternet/data/records.py owns every name and key.

import time
import warnings
from typing import Sequence


from absl import app
from absl import flags
from PIL import Image

from posternet import cli
from posternet.data import convert
from posternet.data import csv_rows
from posternet.data import images
from posternet.data import records
from posternet.data import verify
def _define_flags() -> None:
  """Defines the command's flags (only when run as a command).

  Importing this module must not claim flag names other entry points may
  use.
  """
  flags.DEFINE_string(
      'data_dir', None, 'Folder laid out like the downloadable '
      'Multi_Label_dataset/: multi_label_train.csv or train.csv, and Images/. '
      'Or give --csv and --images.')
  flags.DEFINE_string('csv', None, "The tutorial's CSV: Id, Genre and the 25 "
                      'genre columns.')
  flags.DEFINE_string('images', None, 'Folder of the posters, <Id>.jpg.')
  flags.DEFINE_string('out', None, 'Output folder for the shards, '
                      'manifest.json (and skipped.csv); created if needed.')
  flags.DEFINE_float('val_fraction', 0.1, "Validation share of the tutorial's "
                     'split: the first ceil(val_fraction * rows) of the '
                     'permutation.')
  flags.DEFINE_integer('seed', 42, "Seed of the split (the tutorial's "
                       'random_state=42).')
  flags.DEFINE_integer('workers', None, 'Threads decoding posters; default: '
                       'all cores. The output does not depend on it.')
  flags.DEFINE_bool('skip_bad_images', False, 'Skip (count, and list in '
                    'skipped.csv) bad images instead of stopping at the first.')
  flags.DEFINE_string('store_size', None, 'HxW, e.g. 400x400: shrink each '
                      'poster at conversion to at most this on each side, so '
                      'the host decodes no more pixels than training needs; '
                      'smaller posters keep their own size (never enlarged). '
                      'Default: keep each poster as it is.')
  flags.DEFINE_enum('store_format', 'jpeg', records.STORE_FORMATS,
                    'jpeg: JPEG bytes (small on disk; decoded every epoch). '
                    'raw: uint8 pixels with no codec (nothing to decode; '
                    '3 bytes a pixel on disk: ~360 KB a poster at 400x300).')
  flags.DEFINE_integer('max_pixels', images.MAX_PIXELS,
                       'Refuse images with more pixels than this, from their '
                       'header, before decoding (decompression bombs).')
  flags.DEFINE_integer('min_shards', 1, 'At least this many shards per split '
                       '(at most one a poster). Shards hold 128 posters or '
                       'more, so a small set gets few; multi-worker training '
                       'needs one per input worker in each split.')
  flags.DEFINE_string('verify', None, 'Instead of converting: read every '
                      'record of this records folder back, check CRCs, '
                      'checksums, counts, decode every image; exit 0 only if '
                      'all is well.')
  flags.DEFINE_bool('progress', True, 'Show a progress line on stderr.')


FLAGS = flags.FLAGS


def _source_paths() -> tuple:
  if FLAGS.data_dir and (FLAGS.csv or FLAGS.images):
    raise app.UsageError('give --data_dir, or --csv and --images, not both')
  if FLAGS.data_dir:
    return csv_rows.find_inputs(FLAGS.data_dir)
  if not (FLAGS.csv and FLAGS.images):
    raise app.UsageError('give --data_dir, or both --csv and --images')
  return FLAGS.csv, FLAGS.images


def _check_flags() -> None:
  if not 0 < FLAGS.val_fraction < 1:
    raise app.UsageError(f'--val_fraction={FLAGS.val_fraction}: must be '
                         'between 0 and 1')
  if FLAGS.workers is not None and FLAGS.workers < 1:
    raise app.UsageError(f'--workers={FLAGS.workers}: must be at least 1')
  if FLAGS.max_pixels < 1:
    raise app.UsageError(f'--max_pixels={FLAGS.max_pixels}: must be positive')
  if FLAGS.min_shards < 1:
    raise app.UsageError(f'--min_shards={FLAGS.min_shards}: must be at least 1')
  if not FLAGS.out:
    raise app.UsageError('--out is required: the folder for the records')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Our own --max_pixels check comes first; Pillow's warning would be noise.
  warnings.simplefilter('ignore', Image.DecompressionBombWarning)
  if FLAGS.verify:
    if FLAGS.data_dir or FLAGS.csv or FLAGS.images or FLAGS.out:
      raise app.UsageError('--verify checks a finished records folder; give '
                           'it without --data_dir, --csv, --images or --out')
    _run_verify(FLAGS.verify)
    return
  csv_path, images_dir = _source_paths()
  _check_flags()
  summary = convert.convert(
      csv_path, images_dir, FLAGS.out, val_fraction=FLAGS.val_fraction,
      seed=FLAGS.seed, workers=FLAGS.workers,
      skip_bad_images=FLAGS.skip_bad_images,
      store_size=(cli.parse_size(FLAGS.store_size, 'store_size')
                  if FLAGS.store_size else None),
      max_pixels=FLAGS.max_pixels, min_shards=FLAGS.min_shards,
      progress=FLAGS.progress, store_format=FLAGS.store_format)
  print(convert.format_summary(summary))


def _run_verify(records_dir: str) -> None:
  start = time.monotonic()
  manifest = records.Manifest.read(records_dir)
  problems = verify.check(manifest, workers=FLAGS.workers,
                          progress=FLAGS.progress)
  for problem in problems:
    print(problem)
  if problems:
    raise cli.UserError(f'{len(problems)} problem(s) in {records_dir}')
  counts = ' + '.join(f'{manifest.num_examples(split):,} {split}'
                      for split in records.SPLITS)
  print(f'{records_dir}: all well ({counts} posters, every record read, '
        f'checked and decoded in {time.monotonic() - start:.1f} s)')


def entry() -> None:
  """The console script `posternet-make-records`."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
