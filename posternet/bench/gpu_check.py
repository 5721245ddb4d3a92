r"""The GPU host check: can the input pipeline keep seed_cnn fed?

`tools/gpu_check.sh` (`make gpu-check`), or:

  python -m tools.gpu_check                        # on a GPU host, < 10 min
  python -m tools.gpu_check --csv=path/train.csv --images=path/Images
  python -m tools.gpu_check --tiny                 # anywhere, in seconds

One command prints two tables:
  training   seed_cnn's images/s fed one in-memory batch again and again,
             fed by the pipeline from JPEG records, and from raw records;
             under mixed precision (--precision, mixed_float16), with XLA
             off and on. Fed / memory near 1: the input keeps up.
  host       the input alone, with all the host's cores and no model: the
             JPEG records' bytes decoded from RAM in parallel (the
             benchmark's ceiling), and the full pipeline on JPEG and on raw
             records.

The posters (synthetic, or the first --num_posters rows of --csv) are stored
at up to --store_size (400x400, the tutorial's; none enlarged) as JPEG, and
as raw records padded to the JPEG records' largest stored size
(bench/data.py), in --work_dir, and reused by later runs. The pipeline delivers the
JPEG records' largest stored poster (400x300 for the tutorial's posters) and
the model resizes to --store_size on the device (--model_size), as the
README's recipe trains. --tiny: tiny posters and a blink per row, on any
machine, even without a GPU: it checks that the command works; its numbers
measure nothing.
"""

import time
from typing import Mapping, Sequence


from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import keras
import tensorflow as tf

from posternet import cli
from posternet.train import hardware
from posternet.data import images
from posternet.data import pipeline
from posternet.model import networks
from posternet.data import records
from posternet.bench import data
from posternet.bench import measures
from posternet.bench import summary
from posternet.bench import timing

# --tiny: seconds on a CPU. seed_cnn needs at least 76 px a side.
TINY = {'num_posters': 24, 'store_size': (96, 80), 'batch_size': 4,
        'seconds': 0.2}
# Steps before each timed fit counts (a fit starts a new pipeline iterator).
WARMUP_STEPS = 3
# At most this many timed steps a row: a fast GPU's step is milliseconds,
# and a slow feed must not stretch a row past a minute or two.
MAX_STEPS = 1000
FEEDS = ('memory', 'jpeg', 'raw')

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defines the command's flags (only when run as a command)."""
  flags.DEFINE_bool('tiny', False, 'Tiny posters, a blink per row: checks '
                    'that the command works on any machine (seconds on a '
                    'CPU); its numbers measure nothing.')
  flags.DEFINE_string('csv', None, "The tutorial's CSV of --images: its "
                      'first --num_posters rows are used instead of '
                      'synthetic posters.')
  flags.DEFINE_string('images', None, 'The folder of the --csv posters.')
  flags.DEFINE_integer('num_posters', 2000, 'Posters to convert and feed '
                       '(--tiny: 24).')
  flags.DEFINE_string('store_size', '400x400', 'HxW the posters are stored '
                      'at, at most, and the size seed_cnn is built at '
                      '(--tiny: 96x80).')
  flags.DEFINE_integer('batch_size', 64, 'Images per training step (the '
                       "tutorial's 64; --tiny: 4).")
  flags.DEFINE_float('seconds', 10.0, 'Timed seconds per row, after its '
                     'warm-up (--tiny: 0.2).')
  flags.DEFINE_enum('precision', 'mixed_float16', hardware.PRECISIONS[1:],
                    "Keras dtype policy of seed_cnn's training.")
  flags.DEFINE_string('work_dir', 'bench/gpu_check', 'Folder for the '
                      'posters and their records; reused between runs.')
  flags.DEFINE_string('out', 'bench/gpu_check.json', 'Where to write the '
                      'numbers as JSON.')


def _value(name: str):
  """A flag's value; under --tiny, TINY's unless given explicitly."""
  if FLAGS.tiny and name in TINY and not FLAGS[name].present:
    return TINY[name]
  if name == 'store_size':
    return cli.parse_size(FLAGS.store_size, 'store_size')
  return FLAGS[name].value


def training_rows(manifests: Mapping[str, records.Manifest],
                  image_size: Sequence[int], model_size: Sequence[int],
                  batch_size: int, seconds: float, precision: str) -> list:
  """seed_cnn's rate per feed, XLA off and on: one row each.

  Each XLA setting builds and compiles the model once; each feed then
  trains WARMUP_STEPS steps, and as many more as fill `seconds` at the
  in-memory step time (at most MAX_STEPS), in one fit (measures.fit_seconds).
  """
  feeds = {name: pipeline.for_keras(pipeline.make_dataset(
      manifests[name], 'train', batch_size, image_size,
      **measures.DEVICE_RESIZE)) for name in FEEDS[1:]}
  feeds = {'memory': tf.data.Dataset.from_tensors(
      next(iter(feeds['jpeg']))).repeat(), **feeds}
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(precision)
  rows = []
  try:
    for xla in (False, True):
      model = networks.compiled_model('seed_cnn', image_size,
                                    model_size=model_size, jit_compile=xla)
      step = measures.fit_seconds(model, feeds['memory'], WARMUP_STEPS,
                                  2)[0] / 2  # also compiles
      steps = min(MAX_STEPS, max(2, round(seconds / max(step, 1e-6))))
      for feed, dataset in feeds.items():
        wall, cpu = measures.fit_seconds(model, dataset, WARMUP_STEPS, steps)
        rows.append({'feed': feed, 'xla': xla, 'precision': precision,
                     'steps': steps, 'seconds': wall,
                     'images_per_sec': steps * batch_size / wall,
                     'cpu_ms_per_image': 1e3 * cpu / (steps * batch_size)})
  finally:
    keras.mixed_precision.set_global_policy(previous)
  for row in rows:
    memory = next(r for r in rows if r['xla'] == row['xla'] and
                  r['feed'] == 'memory')
    row['x_memory'] = row['images_per_sec'] / memory['images_per_sec']
  return rows


def host_rows(manifests: Mapping[str, records.Manifest],
              image_size: Sequence[int], batch_size: int,
              seconds: float) -> list:
  """The input alone on every core: decode from RAM, pipeline JPEG and raw."""
  warmup = min(3.0, max(0.05, seconds / 2))
  jpeg = manifests['jpeg']
  ceiling = measures.ceiling_dataset(
      measures.load_encoded(jpeg), measures.decode_plan(jpeg, image_size),
      batch_size, images.DCT_METHOD, True, image_size)
  rows = [{'input': 'decode JPEG from RAM (the ceiling)',
           **timing.time_dataset(ceiling, seconds, warmup)}]
  for name in FEEDS[1:]:
    dataset = pipeline.make_dataset(manifests[name], 'train', batch_size,
                                    image_size, **measures.DEVICE_RESIZE)
    rows.append({'input': f'posternet pipeline, {name} records',
                 **timing.time_dataset(dataset, seconds, warmup)})
  return rows


def run_check(*, work_dir: str, num_posters: int, store_size: Sequence[int],
              batch_size: int, seconds: float, precision: str,
              csv_path=None, images_dir=None, tiny: bool = False) -> dict:
  """Makes (or reuses) the records, measures both tables; the report.

  Raises:
    cli.UserError: no GPU without tiny, or bad --csv/--images.
  """
  gpus = [tf.config.experimental.get_device_details(gpu).get('device_name',
                                                             gpu.name)
          for gpu in tf.config.list_physical_devices('GPU')]
  if not gpus and not tiny:
    raise cli.UserError(
        'no GPU visible to TensorFlow: this check measures a GPU host (on 2 '
        'CPU cores seed_cnn takes ~25 s a step at 400x400); --tiny checks '
        'that it runs, anywhere')
  start = time.monotonic()
  sets, _ = data.record_sets(work_dir, num_posters, store_size, csv_path,
                             images_dir, compressions=())
  manifests = {name: records.Manifest.read(folder)
               for name, folder in sets.items()}
  image_size = manifests['jpeg'].stored_size_range('train')[1]
  networks.check_input('seed_cnn', image_size, store_size)
  return {
      'gpus': gpus, 'cpu_cores': cli.usable_cores(),
      'image_size': list(image_size), 'model_size': list(store_size),
      'batch_size': batch_size, 'seconds_per_row': seconds,
      'records': sets, 'tiny': tiny,
      'training': training_rows(manifests, image_size, store_size,
                                batch_size, seconds, precision),
      'host': host_rows(manifests, image_size, batch_size, seconds),
      'wall_seconds': time.monotonic() - start,
  }


def format_report(report: Mapping) -> str:
  """Both tables in Markdown, and what the numbers are of."""
  (height, width), (mh, mw) = report['image_size'], report['model_size']
  lines = [
      f'devices: {", ".join(report["gpus"]) or "no GPU"}; '
      f'{report["cpu_cores"]} CPU cores; pipeline {height}x{width}, '
      f'seed_cnn at {mh}x{mw} (resized on the device), batch '
      f'{report["batch_size"]}', '',
      '| seed_cnn fed by | XLA | precision | images/s | × from memory | '
      'host CPU ms/image |', '|---|---|---|---:|---:|---:|']
  for row in report['training']:
    lines.append(f'| {row["feed"]} | {"on" if row["xla"] else "off"} | '
                 f'{row["precision"]} | {row["images_per_sec"]:,.0f} | '
                 f'{row["x_memory"]:.2f} | {row["cpu_ms_per_image"]:.3f} |')
  lines += ['', f'| host input, {report["cpu_cores"]} cores, no model | '
            'images/s | CPU ms/image |', '|---|---:|---:|']
  for row in report['host']:
    lines.append(f'| {row["input"]} | {row["images_per_sec"]:,.0f} | '
                 f'{row["cpu_ms_per_image"]:.3f} |')
  if report['tiny']:
    lines += ['', '--tiny: tiny posters for a blink per row; these numbers '
              'only show that the check runs.']
  lines.append(f'\n{report["wall_seconds"]:.0f} s')
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if bool(FLAGS.csv) != bool(FLAGS.images):
    raise app.UsageError('give --csv and --images together, or neither '
                         '(synthetic posters)')
  for name in ('num_posters', 'batch_size'):
    if _value(name) < 1:
      raise app.UsageError(f'--{name}={_value(name)}: must be at least 1')
  if not _value('seconds') > 0:
    raise app.UsageError(f'--seconds={_value("seconds")}: must be positive')
  report = run_check(
      work_dir=FLAGS.work_dir, num_posters=_value('num_posters'),
      store_size=_value('store_size'), batch_size=_value('batch_size'),
      seconds=_value('seconds'), precision=FLAGS.precision,
      csv_path=FLAGS.csv, images_dir=FLAGS.images, tiny=FLAGS.tiny)
  print(format_report(report))
  summary.write_json(FLAGS.out, report)
  print(f'wrote {FLAGS.out}')


def entry() -> None:
  """`python -m tools.gpu_check` (`tools/gpu_check.sh`, `make gpu-check`)."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
