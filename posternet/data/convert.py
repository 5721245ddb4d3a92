"""The converter: the tutorial's CSV and Images/ folder → sharded TFRecords.

The work behind `make records` (tools/make_records.py is its flags and
main), a library the benchmark and the tests call too. In order:

  posternet/data/csv_rows.py      read and check the CSV; the tutorial's split
  posternet/data/shard_plan.py    which poster goes into which shard (shard rule)
  posternet/data/staging.py       lock --out, resume in its staging folder,
                                  check the disk space; publish at the end
  posternet/data/shard_writer.py  write the pending shards, each poster file
                                  → the bytes to store (poster_files.py: JPEG
                                  or raw pixels, never enlarged)
  here                            the run in that order, then the manifest
                                  (posternet/data/records.py's Manifest), last

What it writes under --out:
  train-00000-of-000NN.tfrecord …, val-…
                       one tf.train.Example per poster
  manifest.json        written last: counts, checksums, provenance
  skipped.csv          with skip_bad_images: what was left out, and why

Identical duplicate rows are written once, the first row deciding the split;
the same Id with other labels is an error.

One converter at a time per --out, a set already there stays whole until
the new one is complete, and a stopped run resumes where it stopped
(staging.py says how). Output is byte-identical whatever the worker count,
interrupted or not. All record and manifest I/O goes through tf.io.gfile.
"""

import collections
import csv
import io
import os
import time
from typing import Optional, Sequence

import tensorflow as tf

from posternet import cli
from posternet.data import csv_rows
from posternet import files
from posternet.data import poster_files
from posternet.data import records
from posternet import remote
from posternet import settings as settings_lib
from posternet.data import shard_plan
from posternet.data import shard_writer
from posternet.data import staging


def convert(csv_path: str, images_dir: str, out_dir: str, *,
            workers: Optional[int] = None, progress: bool = True,
            **options) -> dict:
  """Converts the tutorial's CSV + Images/ to shards and manifest.json.

  Args:
    csv_path: the tutorial's CSV (Id, Genre, 25 genre columns).
    images_dir: the folder of <Id>.jpg posters.
    out_dir: where shards, manifest.json (and skipped.csv) go; created. A
      finished set there is replaced only once the new one is complete.
    workers: threads decoding posters; None means all cores.
    progress: show the expected size on disk and a progress line on stderr.
    **options: shard_plan.Options' fields by name (val_fraction, seed,
      skip_bad_images, store_size, max_pixels, min_shards, store_format):
      what is converted and how; each defaults to its Options default.

  Returns:
    The summary: posters written per split, skipped by reason, duplicate
    rows, unlisted images, shards (and how many were reused), bytes, seconds.

  Raises:
    cli.UserError: bad CSV, bad image (without skip_bad_images), an output
      folder that cannot be written or that another converter is writing,
      or too little free space on its disk.
  """
  start = time.monotonic()
  options = _options(csv_path, images_dir, out_dir, **options)
  workers = workers or cli.usable_cores()
  table = csv_rows.read_csv(csv_path)
  unlisted = shard_plan.count_unlisted(images_dir, table)
  shards, key = shard_plan.make_plan(table, images_dir, options, workers)
  with staging.lock_output(out_dir):
    try:
      done = staging.start_or_resume(out_dir, shards, key)
      pending = [s for s in shards if s.file not in done]
      staging.check_disk_space(out_dir, pending, options, progress)
      shard_writer.write_pending(out_dir, pending, table, images_dir,
                                 options, workers, progress, done)
      manifest = _finish(out_dir, table, options, unlisted, shards, done)
    except tf.errors.OpError as e:
      raise staging.unwritable(out_dir, e) from None
  return _summary(manifest, len(shards) - len(pending),
                  time.monotonic() - start)


def format_summary(summary: dict) -> str:
  """The summary as the few lines a person reads at the end of a run."""
  s = summary
  rate = (s['train'] + s['val']) / max(s['seconds'], 1e-9)
  reasons = ', '.join(f'{n} {r}' for r, n in s['skipped_by_reason'].items())
  lines = [
      f'wrote {s["train"]:,} train + {s["val"]:,} val posters to '
      f'{s["out_dir"]} ({s["shards"]["train"]} + {s["shards"]["val"]} shards, '
      f'{s["bytes"] / 1e6:,.1f} MB) in {s["seconds"]:.1f} s '
      f'({rate:,.0f} posters/s)',
      f'skipped {s["skipped"]} poster(s)' + (f': {reasons}' if reasons else ''),
      f'CSV rows {s["csv_rows"]:,} = written {s["train"] + s["val"]:,} + '
      f'skipped {s["skipped"]} + duplicate rows {s["duplicate_rows"]}; '
      f'{s["unlisted_images"]} image(s) not in the CSV ignored',
  ]
  (min_h, min_w), (max_h, max_w) = s['stored_sizes']
  lines.append(f'stored as {s["store_format"]}: train posters of {min_h}x'
               f'{min_w} to {max_h}x{max_w} pixels (none larger than its '
               'source)')
  if s['shards_reused']:
    lines.append(f'resumed: {s["shards_reused"]} shard(s) from an '
                 'interrupted run reused')
  return '\n'.join(lines)

def _options(csv_path: str, images_dir: str, out_dir: str,
             **settings) -> shard_plan.Options:
  """The plan's options from convert's settings, checked before any work."""
  # s3://, hdfs://, http(s)://: say what to install, before any work.
  for path, what in ((csv_path, '--csv'), (images_dir, '--images'),
                     (out_dir, '--out')):
    remote.check_path(path, what)
  store_size = settings.pop('store_size', None)
  options = shard_plan.Options(
      store_size=tuple(int(s) for s in store_size) if store_size else None,
      **settings)
  for _, problem in settings_lib.check(options):
    raise cli.UserError(problem)
  return options


# --- The end: skipped.csv, the manifest, publishing; the summary. ---


def _finish(out_dir: str, table: csv_rows.Table, options: shard_plan.Options,
            unlisted: int, shards: Sequence[shard_plan.Shard],
            done: dict) -> records.Manifest:
  """Stages skipped.csv and the manifest, then publishes the new set."""
  staging_dir = staging.staging_dir(out_dir)
  notes_by_split = {split: [done[s.file] for s in shards if s.split == split]
                    for split in records.SPLITS}
  skipped = [entry for s in shards for entry in done[s.file]['skipped_rows']]
  if options.skip_bad_images:
    files.write_atomically(os.path.join(staging_dir,
                                        staging.SKIPPED_REPORT),
                           _skipped_report(skipped))
  manifest = _manifest(table, options, unlisted, notes_by_split, skipped)
  for split in records.SPLITS:
    if not manifest.num_examples(split):
      raise cli.UserError(f'every poster of the {split} split was skipped; '
                          'see ' + os.path.join(staging_dir,
                                                staging.SKIPPED_REPORT))
  manifest.write(staging_dir)
  new_files = [s.file for s in shards] + (
      [staging.SKIPPED_REPORT] if options.skip_bad_images else [])
  staging.publish(out_dir, new_files)
  return manifest.at(out_dir)


def _manifest(table: csv_rows.Table, options: shard_plan.Options,
              unlisted: int, notes_by_split: dict,
              skipped: Sequence) -> records.Manifest:
  """The manifest of a finished conversion, built from the shards' notes."""
  by_reason = collections.Counter(entry[3] for entry in skipped)
  unique = int(table.first.sum())
  return records.Manifest(
      splits={split: records.SplitInfo.build(
          [staging.noted_shard(note) for note in notes],
          [hw for note in notes for hw in note['stored_sizes']])
              for split, notes in notes_by_split.items()},
      source=records.Source(
          csv=table.name, csv_sha256=table.sha256, csv_rows=table.num_rows,
          unique_ids=unique, duplicate_rows=table.num_rows - unique,
          unlisted_images=unlisted),
      split_rule=records.SplitRule(seed=options.seed,
                                   val_fraction=options.val_fraction),
      skipped=records.Skipped(
          count=len(skipped),
          by_reason={r: by_reason[r] for r in poster_files.REASONS},
          report=(staging.SKIPPED_REPORT if options.skip_bad_images
                  else None)),
      store_size=options.store_size,
      store_format=options.store_format,
      raw_padded=(options.store_format == 'raw' and
                  options.store_size is not None))


def _skipped_report(skipped: Sequence) -> bytes:
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(['line', 'Id', 'file', 'reason', 'detail'])
  writer.writerows(sorted(skipped))
  return text.getvalue().encode()


def _summary(manifest: records.Manifest, reused: int, seconds: float) -> dict:
  splits = manifest.splits
  return {
      'out_dir': manifest.records_dir,
      'train': manifest.num_examples('train'),
      'val': manifest.num_examples('val'),
      'shards': {split: len(info.shards) for split, info in splits.items()},
      'shards_reused': reused,
      'csv_rows': manifest.source.csv_rows,
      'skipped': manifest.skipped.count,
      'skipped_by_reason': {reason: count for reason, count in
                            manifest.skipped.by_reason.items() if count},
      'duplicate_rows': manifest.source.duplicate_rows,
      'unlisted_images': manifest.source.unlisted_images,
      'bytes': sum(shard.bytes for info in splits.values()
                   for shard in info.shards),
      'store_format': manifest.store_format,
      'stored_sizes': manifest.stored_size_range('train'),
      'seconds': seconds,
  }
