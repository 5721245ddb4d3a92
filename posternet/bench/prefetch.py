r"""The prefetch benchmark: how fast posternet's input pipeline feeds a model.

`make bench`, or:

  python -m tools.prefetch_bench --out=bench/bench.json
  python -m tools.make_records --csv=path/train.csv --images=path/Images \
      --out=/tmp/real128 --store_size=128x128
  python -m tools.prefetch_bench --records=/tmp/real128 \
      --images=path/Images --out=bench/real.json
  python -m tools.prefetch_bench --quick   # smoke test, 20-40 s: bench/quick.json
  python -m tools.prefetch_bench --real_size --csv=path/train.csv \
      --images=path/Images --num_posters=2000 --out=bench/real400.json

Everything is measured in one run, on the same records and poster bytes:
  ceiling    in-memory decode_jpeg of the records' own JPEG bytes, in parallel
             inside tf.data, with both DCT methods, poster by poster and batch
             by batch (the ceiling is the faster of the two)
  stages     posternet's pipeline built up to each stage (make_dataset's
             stop_after): read, + batch + parse, + decode, + prefetch
  options    the full pipeline with one option changed: parallel calls 1,
             prefetch off, deterministic order, cache
  baselines  the tutorial's loop (load_img → img_to_array → /255 → np.array,
             over a subset, scaled up) and image_dataset_from_directory, both
             at the same image size, on the source posters
  stall      seed_cnn's training step rate fed by the pipeline, over the same
             model fed one in-memory batch again and again
  memory     each variant's peak RSS; a full training epoch at 1× and 4× the
             posters
  real size  (--real_size) the posters stored at the tutorial's 400x400 in
             both formats: the JPEG rows above, the raw records' stages, the
             raw records through TFRecord GZIP and ZLIB compression, an epoch
             of each; no stall rows (tools/gpu_check.sh measures the model)

Each variant runs in a fresh process (--isolate, the default but under
--quick): its peak RSS is its own, and no variant inherits another's threads
or memory. With --repeats, every variant runs that many times, round-robin,
and each row reports its median run and the spread (slowest–fastest).
Images are counted inside TensorFlow, many batches per call: a Python loop
per poster would cap the rate at a few thousand per second and hide the
pipeline's real speed.
Every variant warms up first (threads started, buffers filled, AUTOTUNE
settled), then runs --seconds.

Without --records, synthetic posters (or the first --num_posters rows of
--csv) are converted into --work_dir with --store_size equal to --image_size
(the README's way to make training records: no resize left on the host);
later runs reuse them.
"""

from typing import Sequence


from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from posternet import cli
from posternet.train import hardware
from posternet.data import records
from posternet.bench import runner
from posternet.bench import summary

# --quick: a smoke test of every variant, for tests and for checking that
# the benchmark runs at all. Tiny data (seed_cnn needs at least 76 px), a
# blink per variant, all in one process (a fresh TensorFlow process per
# variant costs ~10 s on 2 cores), no verdicts: its numbers measure nothing.
# Its report has a file of its own: a smoke test never replaces a
# measurement.
QUICK = {'num_posters': 48, 'image_size': (80, 80), 'batch_size': 8,
         'seconds': 0.1, 'isolate': False, 'repeats': 1,
         'store_size': (96, 80), 'out': 'bench/quick.json'}
# --real_size: the tutorial's size, every variant 3 times, a subset of
# posters (raw records take ~360 KB each on disk, and compressed copies).
REAL_SIZE = {'repeats': 3, 'num_posters': 2000,
             'store_size': runner.REAL_STORE_SIZE,
             'out': 'bench/real400.json'}

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defines the command's flags (only when run as a command).

  Importing the module (tests, other tools) must not claim flag names such
  as --records or --out that other entry points use.
  """
  _define_data_flags()
  _define_run_flags()


def _define_data_flags() -> None:
  """What is measured: the records or posters, their sizes, the batch."""
  flags.DEFINE_string('records', None, 'Records folder to measure (made by '
                      '`make records`). Default: synthetic posters, generated '
                      'and converted into --work_dir first.')
  flags.DEFINE_string('images', None, 'Source Images/ folder of --records, for '
                      "the baselines (the tutorial's loop, "
                      'image_dataset_from_directory). Default: the synthetic '
                      "Images/, or the records' own posters written out.")
  flags.DEFINE_string('csv', None, "The tutorial's CSV of the --images "
                      'posters: its first --num_posters rows are converted '
                      'and measured instead of synthetic posters.')
  flags.DEFINE_integer('num_posters', runner.DEFAULT_NUM_POSTERS,
                       'Synthetic posters to generate, or --csv rows to take, '
                       'when --records is not given (--real_size: 2000).')
  flags.DEFINE_bool('real_size', False, "The tutorial's size: posters "
                    'stored at --store_size (400x400; none enlarged) as JPEG '
                    'and as raw records (also GZIP/ZLIB-compressed), every '
                    'variant --repeats=3 times; no seed_cnn stall rows. '
                    "--image_size defaults to the JPEG records' largest "
                    'stored poster (the model resizes the rest on the '
                    'device).')
  flags.DEFINE_string('store_size', None, 'HxW the --real_size records are '
                      'stored at, at most (default 400x400).')
  flags.DEFINE_string('image_size', None, 'HxW (or one number) of the '
                      'model-ready batches; also the synthetic records\' '
                      "--store_size. Default: --records' store size, else "
                      '{}x{}.'.format(*runner.DEFAULT_IMAGE_SIZE))
  flags.DEFINE_integer('batch_size', 64, 'Images per batch (the tutorial: 64).')


def _define_run_flags() -> None:
  """How it is measured: time per variant, isolation, repeats, the report."""
  flags.DEFINE_float('seconds', 5.0, 'Timed seconds per variant, after its '
                     'warm-up.')
  flags.DEFINE_string('out', 'bench/bench.json', 'Where to write the JSON '
                      'report; default bench/bench.json, bench/quick.json '
                      'with --quick, bench/real400.json with --real_size.')
  flags.DEFINE_bool('quick', False, 'Smoke test: every variant once, in this '
                    'process, on tiny data (48 posters, 80x80, batch 8, '
                    '0.1 s per variant; flags given explicitly win). Its '
                    'numbers measure nothing: no target verdicts.')
  flags.DEFINE_enum('precision', 'auto', hardware.PRECISIONS, 'Keras dtype '
                    "policy of the stall rows' seed_cnn; auto: the trainer's "
                    'choice.')
  flags.DEFINE_string('work_dir', 'bench/work', 'Folder for synthetic data, '
                      'the scaled records of the memory check, and posters '
                      'written out of --records; reused between runs.')
  flags.DEFINE_bool('isolate', True, 'Run each variant in its own process, so '
                    'its peak RSS is its own (default: on, but off under '
                    '--quick). --noisolate is faster; RSS is then reset per '
                    'variant where Linux allows.')
  flags.DEFINE_integer('repeats', 1, 'Runs of every variant, round-robin; '
                       'each row reports its median run and the spread '
                       '(slowest–fastest). --real_size: 3.')
  flags.DEFINE_string('variant', None, 'Used by the benchmark itself: '
                      'measures the one variant a JSON file describes, in '
                      'its own process (--isolate).')
  flags.DEFINE_list('only', None, 'Run only the variants whose names '
                    'contain one of these texts, comma-separated (e.g. '
                    '"ceiling,posternet pipeline"); default: every variant.')
  flags.DEFINE_bool('data_service', False, 'Also time the full pipeline fed '
                    'by a tf.data service on this machine: a dispatcher and '
                    '1, then 2, worker processes on 127.0.0.1 '
                    '(posternet.data_service, parallel_epochs).')


def _value(name: str):
  """A flag's value: given explicitly, else QUICK's under --quick, else
  REAL_SIZE's under --real_size, else its default."""
  if not FLAGS[name].present:
    for mode, values in ((FLAGS.quick, QUICK), (FLAGS.real_size, REAL_SIZE)):
      if mode and name in values:
        return values[name]
  return FLAGS[name].value


def _image_size():
  """--image_size, else --records' store size, else the default.

  None under --real_size: the JPEG records' largest stored poster.
  """
  if FLAGS.image_size:
    return cli.parse_size(FLAGS.image_size, 'image_size')
  if FLAGS.real_size:
    return None
  if FLAGS.quick:
    return QUICK['image_size']
  if FLAGS.records:
    store_size = records.Manifest.read(FLAGS.records).store_size
    if store_size:
      return store_size
  return runner.DEFAULT_IMAGE_SIZE


def _store_size() -> tuple:
  """--store_size (--real_size only), else REAL_SIZE's or QUICK's."""
  if FLAGS.store_size:
    return cli.parse_size(FLAGS.store_size, 'store_size')
  return _value('store_size')


def _check_flags() -> None:
  if _value('repeats') < 1:
    raise app.UsageError(f'--repeats={_value("repeats")}: must be at least 1')
  if FLAGS.real_size and FLAGS.records:
    raise app.UsageError('--real_size converts its own records (of --csv and '
                         '--images, or synthetic posters); give no --records')
  if FLAGS.csv and FLAGS.records:
    raise app.UsageError('give --records, or --csv with --images, not both')
  if FLAGS.csv and not FLAGS.images:
    raise app.UsageError('--csv needs --images, the folder of its posters')
  if FLAGS.store_size and not FLAGS.real_size:
    raise app.UsageError('--store_size is for --real_size; otherwise the '
                         'records are stored at --image_size')
  for name in ('num_posters', 'batch_size'):
    if _value(name) < 1:
      raise app.UsageError(f'--{name}={_value(name)}: must be at least 1')
  if not _value('seconds') > 0:
    raise app.UsageError(f'--seconds={_value("seconds")}: must be positive')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.variant:
    runner.run_variant_file(FLAGS.variant)
    return
  _check_flags()
  out = _value('out')
  report = runner.run_benchmark(
      out=out, records_dir=FLAGS.records, images_dir=FLAGS.images,
      num_posters=_value('num_posters'), image_size=_image_size(),
      batch_size=_value('batch_size'), seconds=_value('seconds'),
      precision=FLAGS.precision, work_dir=FLAGS.work_dir,
      isolate=_value('isolate'), repeats=_value('repeats'),
      service=FLAGS.data_service, quick=FLAGS.quick,
      real_size=FLAGS.real_size, csv_path=FLAGS.csv,
      store_size=_store_size(), only=FLAGS.only or ())
  setup = report['setup']
  sets = ''.join(f' + {name}' for name in setup['record_sets'])
  print(f'{setup["records"]}{sets}: {setup["image_size"][0]}x'
        f'{setup["image_size"][1]}, batch {setup["batch_size"]}, '
        f'{setup["repeats"]} run(s) per variant (median; spread: '
        'slowest–fastest), '
        f'{setup["seconds"]:g} s per variant, {setup["cpu_cores"]} cores, '
        f'load average {setup["load_average_start"][0]:.1f} → '
        f'{setup["load_average_end"][0]:.1f}\n')
  print(summary.format_table(report))
  print(f'\nwrote {out}')


def entry() -> None:
  """`python -m tools.prefetch_bench` (`make bench`)."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
