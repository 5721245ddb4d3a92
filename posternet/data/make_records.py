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
from posternet import settings
from posternet.data import convert
from posternet.data import csv_rows
from posternet.data import records
from posternet.data import shard_plan
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
  flags.DEFINE_integer('workers', None, 'Threads decoding posters; default: '
                       'all cores. The output does not depend on it.')
  flags.DEFINE_string('verify', None, 'Instead of converting: read every '
                      'record of this records folder back, check CRCs, '
                      'checksums, counts, decode every image; exit 0 only if '
                      'all is well.')
  flags.DEFINE_bool('progress', True, 'Show a progress line on stderr.')
  # What is converted and how: shard_plan.Options' fields, with their help.
  settings.define_flags(shard_plan.Options)


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
      csv_path, images_dir, FLAGS.out, workers=FLAGS.workers,
      progress=FLAGS.progress,
      **settings.flag_values(shard_plan.Options, FLAGS))
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
