r"""The prefetch benchmark: how fast posternet's input pipeline feeds a model.

`make bench`, or:

  python -m tools.prefetch_bench --out=bench/bench.json
  python -m tools.make_records --csv=path/train.csv --images=path/Images \
      --out=/tmp/real128 --store_size=128x128
  python -m tools.prefetch_bench --records=/tmp/real128 \
      --images=path/Images --out=bench/real.json
  python -m tools.prefetch_bench --quick   # smoke test, 20-40 s: no numbers

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

Each variant runs in a fresh process (--isolate, the default but under
--quick): its peak RSS is its own, and no variant inherits another's threads
or memory. Images are counted inside TensorFlow, many batches per call (a
tf.while_loop pulling from one iterator): a Python loop per poster would cap
the rate at a few thousand per second and hide the pipeline's real speed.
Every variant warms up first (threads started, buffers filled, AUTOTUNE
settled), then runs --seconds.

Without --records, synthetic posters are generated into --work_dir and
converted with --store_size equal to --image_size (the README's way to make
training records: no resize left on the host); later runs reuse them.
"""

import os
from typing import Sequence

if __name__ == '__main__':
  # The table is the output; TF's C++ start-up lines would only bury it.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from posternet import cli
from posternet import hardware
from posternet import records
from tools.bench import runner
from tools.bench import summary

# --quick: a smoke test of every variant, for tests and for checking that
# the benchmark runs at all. Tiny data (seed_cnn needs at least 76 px), a
# blink per variant, all in one process (a fresh TensorFlow process per
# variant costs ~10 s on 2 cores), no verdicts: its numbers measure nothing.
QUICK = {'num_posters': 48, 'image_size': (80, 80), 'batch_size': 8,
         'seconds': 0.1, 'isolate': False}

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defines the command's flags (only when run as a command).

  Importing the module (tests, other tools) must not claim flag names such
  as --records or --out that other entry points use.
  """
  flags.DEFINE_string('records', None, 'Records folder to measure (made by '
                      '`make records`). Default: synthetic posters, generated '
                      'and converted into --work_dir first.')
  flags.DEFINE_string('images', None, 'Source Images/ folder of --records, for '
                      "the baselines (the tutorial's loop, "
                      'image_dataset_from_directory). Default: the synthetic '
                      "Images/, or the records' own posters written out.")
  flags.DEFINE_integer('num_posters', runner.DEFAULT_NUM_POSTERS,
                       'Synthetic posters to generate when --records is not '
                       'given.')
  flags.DEFINE_string('image_size', None, 'HxW (or one number) of the '
                      'model-ready batches; also the synthetic records\' '
                      "--store_size. Default: --records' store size, else "
                      '{}x{}.'.format(*runner.DEFAULT_IMAGE_SIZE))
  flags.DEFINE_integer('batch_size', 64, 'Images per batch (the tutorial: 64).')
  flags.DEFINE_float('seconds', 5.0, 'Timed seconds per variant, after its '
                     'warm-up.')
  flags.DEFINE_string('out', 'bench/bench.json', 'Where to write the JSON '
                      'report.')
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
                       'each row reports its fastest run (on a shared machine '
                       'other jobs only slow runs down).')
  flags.DEFINE_string('variant', None, 'Internal: run the one measurement '
                      'described in this JSON file and write its rows beside '
                      'it (how --isolate runs each variant).')
  flags.DEFINE_bool('data_service', False, 'Also time the full pipeline fed '
                    'by a tf.data service on this machine: a dispatcher and '
                    '1, then 2, worker processes on 127.0.0.1 '
                    '(posternet.data_service, parallel_epochs).')


def _value(name: str):
  """A flag's value; under --quick, QUICK's value unless given explicitly."""
  if FLAGS.quick and name in QUICK and not FLAGS[name].present:
    return QUICK[name]
  return FLAGS[name].value


def _image_size() -> tuple:
  """--image_size, else --records' store size, else the default."""
  if FLAGS.image_size:
    return cli.parse_size(FLAGS.image_size, 'image_size')
  if FLAGS.quick:
    return QUICK['image_size']
  if FLAGS.records:
    store_size = records.Manifest.read(FLAGS.records).store_size
    if store_size:
      return store_size
  return runner.DEFAULT_IMAGE_SIZE


def _check_flags() -> None:
  if FLAGS.repeats < 1:
    raise app.UsageError(f'--repeats={FLAGS.repeats}: must be at least 1')
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
  report = runner.run_benchmark(
      out=FLAGS.out, records_dir=FLAGS.records, images_dir=FLAGS.images,
      num_posters=_value('num_posters'), image_size=_image_size(),
      batch_size=_value('batch_size'), seconds=_value('seconds'),
      precision=FLAGS.precision, work_dir=FLAGS.work_dir,
      isolate=_value('isolate'), repeats=FLAGS.repeats,
      service=FLAGS.data_service, quick=FLAGS.quick)
  setup = report['setup']
  print(f'{setup["records"]}: {setup["image_size"][0]}x'
        f'{setup["image_size"][1]}, batch {setup["batch_size"]}, '
        f'{setup["seconds"]:g} s per variant, {setup["cpu_cores"]} cores, '
        f'load average {setup["load_average_start"][0]:.1f} → '
        f'{setup["load_average_end"][0]:.1f}\n')
  print(summary.format_table(report))
  print(f'\nwrote {FLAGS.out}')


def entry() -> None:
  """`python -m tools.prefetch_bench` (`make bench`)."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
