"""The converter: the tutorial's CSV and Images/ folder → sharded TFRecords.

The work behind `make records` (tools/make_records.py is its flags and
main), a library the benchmark and the tests call too. In order:

  posternet/data/csv_rows.py      read and check the CSV; the tutorial's split
  posternet/data/shard_plan.py    which poster goes into which shard (shard rule)
  posternet/data/poster_files.py  each poster file → the bytes to store (JPEG or
                             raw pixels), never enlarged past its own size
  here                       write the shards, then the manifest
                             (posternet/data/records.py's Manifest), last

What it writes under --out:
  train-00000-of-000NN.tfrecord …, val-…
                       one tf.train.Example per poster
  manifest.json        written last: counts, checksums, provenance
  skipped.csv          with skip_bad_images: what was left out, and why

Identical duplicate rows are written once, the first row deciding the split;
the same Id with other labels is an error.

One converter at a time per --out: it holds `.make_records.lock` there
(files.FolderLock) for the whole run, and a second one stops at once,
naming the holder's pid.

Staging, TFDS-style: the new set is built in `.make_records/` under --out,
beside the set already there, which stays whole and valid until the new one
is complete. Then it is published (_publish): the old manifest goes first,
then the shards move in, the new manifest last. A run that fails or is
stopped leaves a finished set as it was.

Resume: the plan is keyed (shard_plan.make_plan) and kept in `.make_records/`
with a note per finished shard, its sha256 included. A rerun with the same
key reuses a finished shard only if its bytes still have that checksum
(else it is written again); any other plan starts afresh. Output is
byte-identical whatever the worker count, interrupted or not. All record
and manifest I/O goes through tf.io.gfile.
"""

import collections
import concurrent.futures
import csv
import functools
import io
import itertools
import json
import os
import re
import shutil
import sys
import time
from typing import Iterable, Iterator, Optional, Sequence

from absl import logging
import tensorflow as tf

from posternet import cli
from posternet.data import csv_rows
from posternet import files
from posternet.data import images
from posternet.data import poster_files
from posternet.data import records
from posternet import remote
from posternet.data import shard_plan
SKIPPED_REPORT = 'skipped.csv'
# The staging folder: the new set and its resume notes, until published.
STATE_DIR = '.make_records'
# The lock file of the run that holds --out (files.FolderLock).
LOCK_FILE = '.make_records.lock'

_SHARD_FILE = re.compile(r'^(train|val)-\d{5}-of-\d{5}\.tfrecord$')


def convert(csv_path: str, images_dir: str, out_dir: str, *,
            val_fraction: float = 0.1, seed: int = 42,
            workers: Optional[int] = None, skip_bad_images: bool = False,
            store_size: Optional[Sequence[int]] = None,
            max_pixels: int = images.MAX_PIXELS,
            min_shards: int = 1, progress: bool = True,
            store_format: str = 'jpeg') -> dict:
  """Converts the tutorial's CSV + Images/ to shards and manifest.json.

  Args:
    csv_path: the tutorial's CSV (Id, Genre, 25 genre columns).
    images_dir: the folder of <Id>.jpg posters.
    out_dir: where shards, manifest.json (and skipped.csv) go; created. A
      finished set there is replaced only once the new one is complete.
    val_fraction: validation share of the tutorial's split.
    seed: the split's seed (the tutorial's random_state).
    workers: threads decoding posters; None means all cores.
    skip_bad_images: leave bad images out (counted, listed in skipped.csv)
      instead of stopping at the first.
    store_size: (height, width) no poster is stored larger than (each side
      shrunk to at most it; smaller posters keep their size), or None.
    max_pixels: images larger than this are refused from their header.
    min_shards: at least this many shards per split (at most one a poster),
      for that many input workers on a small data set.
    progress: show the expected size on disk and a progress line on stderr.
    store_format: 'jpeg' (JPEG bytes) or 'raw' (uint8 pixels, no codec).

  Returns:
    The summary: posters written per split, skipped by reason, duplicate
    rows, unlisted images, shards (and how many were reused), bytes, seconds.

  Raises:
    cli.UserError: bad CSV, bad image (without skip_bad_images), an output
      folder that cannot be written or that another converter is writing,
      or too little free space on its disk.
  """
  start = time.monotonic()
  # s3://, hdfs://, http(s)://: say what to install, before any work.
  for path, what in ((csv_path, '--csv'), (images_dir, '--images'),
                     (out_dir, '--out')):
    remote.check_path(path, what)
  workers = workers or cli.usable_cores()
  store_size = tuple(int(s) for s in store_size) if store_size else None
  if store_format not in records.STORE_FORMATS:
    raise cli.UserError(f'store format {store_format!r}: choose one of '
                        f'{", ".join(records.STORE_FORMATS)}')
  options = shard_plan.Options(
      val_fraction=val_fraction, seed=seed, skip_bad_images=skip_bad_images,
      store_size=store_size, max_pixels=max_pixels, min_shards=min_shards,
      store_format=store_format)
  table = csv_rows.read_csv(csv_path)
  unlisted = shard_plan.count_unlisted(images_dir, table)
  shards, key = shard_plan.make_plan(table, images_dir, options, workers)
  with _lock_output(out_dir):
    try:
      done = _start_or_resume(out_dir, shards, key)
      pending = [s for s in shards if s.file not in done]
      _check_disk_space(out_dir, pending, options, progress)
      _write_pending(out_dir, pending, table, images_dir, options, workers,
                     progress, done)
      manifest = _finish(out_dir, table, options, unlisted, shards, done)
    except tf.errors.OpError as e:
      raise _unwritable(out_dir, e) from None
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


# --- Resumable state on disk: the plan, and one note per finished shard. ---
# A note: {'shard': its records.ShardInfo, 'skipped_rows': [[line, Id, file,
# reason, detail], …], 'stored_sizes': [[min_h, min_w], [max_h, max_w]]}.


def _json_bytes(value) -> bytes:
  return (json.dumps(value, indent=2, sort_keys=True) + '\n').encode()


def _read_json(path: str):
  """The JSON in path, or None when absent or unreadable (half-written)."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      return json.loads(f.read())
  except (tf.errors.OpError, ValueError):
    return None


def _lock_output(out_dir: str) -> files.FolderLock:
  """Creates --out and locks it for this run; a second run fails at once."""
  try:
    tf.io.gfile.makedirs(out_dir)
    return files.FolderLock(out_dir, LOCK_FILE)
  except files.FolderBusy as e:
    holder = f'pid {e.pid}' if e.pid else 'another process'
    raise cli.UserError(
        f'{out_dir} is being written by another converter ({holder}); wait '
        'for it to finish, or give another --out') from None
  except tf.errors.OpError as e:
    raise _unwritable(out_dir, e) from None
  except OSError as e:
    raise cli.UserError(f'cannot write to {out_dir}: {e.strerror}') from None


def _staging(out_dir: str) -> str:
  return os.path.join(out_dir, STATE_DIR)


def _start_or_resume(out_dir: str, shards: Sequence[shard_plan.Shard],
                     key: str) -> dict:
  """Keeps this plan's finished shards, else starts afresh in staging.

  Only the staging folder is touched: the set already in --out stays whole
  until _publish.

  Returns:
    {shard file: its note} for shards finished by an earlier run.
  """
  staging = _staging(out_dir)
  plan_file = os.path.join(staging, 'plan.json')
  old = _read_json(plan_file)
  if not old or old.get('key') != key:
    if tf.io.gfile.exists(staging):
      tf.io.gfile.rmtree(staging)
    tf.io.gfile.makedirs(staging)
    files.write_atomically(plan_file, _json_bytes(
        {'key': key, 'files': [s.file for s in shards]}))
    return {}
  notes = {}
  for shard in shards:
    note = _read_json(os.path.join(staging, shard.file + '.json'))
    if note and _still_finished(out_dir, _noted_shard(note)):
      notes[shard.file] = note
  return notes


def _still_finished(out_dir: str, noted: records.ShardInfo) -> bool:
  """Whether a noted shard's bytes still have the checksum of its note.

  The staged copy decides; a shard no longer staged may already have been
  published (a run stopped while publishing). A damaged copy is said once
  and written again.
  """
  for folder in (_staging(out_dir), out_dir):
    path = os.path.join(folder, noted.file)
    if tf.io.gfile.exists(path):
      if records.size_and_sha256(path) == (noted.bytes, noted.sha256):
        return True
      logging.warning('%s: its bytes no longer have the sha256 noted when it '
                      'was finished; writing it again', path)
      return False
  return False


def _check_disk_space(out_dir: str, pending: Sequence[shard_plan.Shard],
                      options: shard_plan.Options, progress: bool) -> None:
  """Says how much the shards to write will take; refuses what cannot fit.

  The estimate is shard_plan's (raw: exact pixels from the headers; JPEG: a
  generous guess). Remote folders (gs://) are not checked.
  """
  needed = sum(shard.estimated_bytes for shard in pending)
  if remote.scheme(out_dir):
    return
  free = shutil.disk_usage(out_dir).free
  if progress:
    size = ('' if options.store_size is None else
            ' at up to {}x{}'.format(*options.store_size))
    print(f'expected size on disk: {needed / 1e9:,.2f} GB '
          f'({options.store_format}{size}); {free / 1e9:,.1f} GB free in '
          f'{out_dir}', file=sys.stderr)
  if needed > free:
    raise cli.UserError(
        f'the records would take about {needed / 1e9:,.2f} GB, but only '
        f'{free / 1e9:,.2f} GB is free in {out_dir}; free some space, or '
        'choose another --out or a smaller --store_size'
        + (', or --store_format=jpeg' if options.store_format == 'raw'
           else ''))


def _noted_shard(note: dict) -> records.ShardInfo:
  return records.ShardInfo.from_dict(note['shard'])


def _unwritable(out_dir: str, error: tf.errors.OpError) -> cli.UserError:
  return cli.UserError(f'cannot write to {out_dir}: {cli.tf_message(error)}')


# --- Writing the shards. ---


def _write_pending(out_dir: str, pending: Sequence[shard_plan.Shard],
                   table: csv_rows.Table, images_dir: str,
                   options: shard_plan.Options, workers: int, progress: bool,
                   done: dict) -> None:
  """Writes the shards not finished yet into staging, noting each when done."""
  bar = cli.Progress(sum(len(s.rows) for s in pending),
                     f'converting to {out_dir}', enabled=progress)
  staging = _staging(out_dir)
  try:
    for note in _write_shards(staging, pending, table, images_dir, options,
                              workers, bar):
      shard_file = _noted_shard(note).file
      files.write_atomically(os.path.join(staging, shard_file + '.json'),
                             _json_bytes(note))
      done[shard_file] = note
  finally:
    bar.close()


def _write_shards(folder: str, shards: Sequence[shard_plan.Shard],
                  table: csv_rows.Table, images_dir: str,
                  options: shard_plan.Options, workers: int,
                  bar: cli.Progress) -> Iterator:
  """Converts posters on a thread pool, writing shards in order; yields notes.

  TF's decode and encode ops release the GIL, so threads use every core; the
  results come back in input order, which makes the bytes independent of
  the worker count.
  """
  load = functools.partial(poster_files.load_poster,
                           max_pixels=options.max_pixels,
                           store_size=options.store_size,
                           images_dir=images_dir,
                           store_format=options.store_format)
  paths = (shard_plan.image_path(images_dir, table.ids[row])
           for shard in shards for row in shard.rows)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    futures = _ordered(pool, load, paths, window=4 * workers)
    try:
      for shard in shards:
        yield _write_shard(folder, shard, futures, table, images_dir,
                           options.skip_bad_images, bar)
    finally:
      pool.shutdown(wait=True, cancel_futures=True)


def _ordered(pool, function, items: Iterable, window: int) -> Iterator:
  """Futures of function(item) in input order, at most `window` in flight."""
  items = iter(items)
  pending = collections.deque(
      pool.submit(function, item) for item in itertools.islice(items, window))
  while pending:
    future = pending.popleft()
    pending.extend(pool.submit(function, item)
                   for item in itertools.islice(items, 1))
    yield future


def _write_shard(folder: str, shard: shard_plan.Shard, futures: Iterator,
                 table: csv_rows.Table, images_dir: str,
                 skip_bad_images: bool, bar: cli.Progress) -> dict:
  """Writes one shard under a temporary name, renames it, returns its note."""
  with files.atomic_path(os.path.join(folder, shard.file)) as temporary:
    with tf.io.TFRecordWriter(temporary) as writer:
      sizes, skipped = _write_examples(writer, shard, futures, table,
                                       images_dir, skip_bad_images, bar)
    size, sha256 = records.size_and_sha256(temporary)
  heights, widths = zip(*sizes) if sizes else ((), ())
  return {'shard': records.ShardInfo(shard.file, len(sizes), size,
                                     sha256).to_dict(),
          'skipped_rows': skipped,
          'stored_sizes': ([[min(heights), min(widths)],
                            [max(heights), max(widths)]] if sizes else [])}


def _write_examples(writer: tf.io.TFRecordWriter, shard: shard_plan.Shard,
                    futures: Iterator, table: csv_rows.Table,
                    images_dir: str, skip_bad_images: bool,
                    bar: cli.Progress) -> tuple:
  """Writes a shard's posters in row order; (stored sizes, skipped rows)."""
  sizes, skipped = [], []
  for row in shard.rows:
    poster_id = table.ids[row]
    try:
      poster = next(futures).result()
    except poster_files.BadImage as e:
      if not skip_bad_images:
        raise cli.UserError(
            f'{shard_plan.image_path(images_dir, poster_id)} (line '
            f'{table.line_of(row)}, Id {poster_id}): {e}; fix or remove '
            'the row, or pass --skip_bad_images to leave such posters '
            'out') from None
      skipped.append([table.line_of(row), poster_id,
                      poster_id + csv_rows.IMAGE_SUFFIX, e.reason, e.detail])
    else:
      example = records.make_example(poster.data, poster.height,
                                     poster.width, poster_id,
                                     table.labels[row])
      # deterministic: map order otherwise differs between processes, and
      # a resumed run must write the very bytes of an uninterrupted one.
      writer.write(example.SerializeToString(deterministic=True))
      sizes.append((poster.height, poster.width))
    bar.update()
  return sizes, skipped


# --- The end: skipped.csv, the manifest, publishing; the summary. ---


def _finish(out_dir: str, table: csv_rows.Table, options: shard_plan.Options,
            unlisted: int, shards: Sequence[shard_plan.Shard],
            done: dict) -> records.Manifest:
  """Stages skipped.csv and the manifest, then publishes the new set."""
  staging = _staging(out_dir)
  notes_by_split = {split: [done[s.file] for s in shards if s.split == split]
                    for split in records.SPLITS}
  skipped = [entry for s in shards for entry in done[s.file]['skipped_rows']]
  if options.skip_bad_images:
    files.write_atomically(os.path.join(staging, SKIPPED_REPORT),
                           _skipped_report(skipped))
  manifest = _manifest(table, options, unlisted, notes_by_split, skipped)
  for split in records.SPLITS:
    if not manifest.num_examples(split):
      raise cli.UserError(f'every poster of the {split} split was skipped; '
                          f'see {os.path.join(staging, SKIPPED_REPORT)}')
  manifest.write(staging)
  new_files = [s.file for s in shards] + (
      [SKIPPED_REPORT] if options.skip_bad_images else [])
  _publish(out_dir, new_files)
  return manifest.at(out_dir)


def _publish(out_dir: str, new_files: Sequence[str]) -> None:
  """Replaces the set in --out by the staged one, its manifest last.

  The old manifest goes first, so --out never claims a mix of old and new
  shards; then what the old set had and the new one has not, then the new
  files move in. A run stopped in between leaves no manifest and the notes
  in staging: its rerun finds each shard staged or already moved (by
  checksum) and publishes again.
  """
  staging = _staging(out_dir)
  _remove_if_there(records.manifest_path(out_dir))
  for name in tf.io.gfile.listdir(out_dir):
    name = name.rstrip('/')
    final = files.final_name(name)  # a killed run's temporary file too
    ours = _SHARD_FILE.match(final) or final in (records.MANIFEST_NAME,
                                                 SKIPPED_REPORT)
    if ours and name not in new_files:
      tf.io.gfile.remove(os.path.join(out_dir, name))
  for name in new_files:
    if tf.io.gfile.exists(os.path.join(staging, name)):
      tf.io.gfile.rename(os.path.join(staging, name),
                         os.path.join(out_dir, name), overwrite=True)
  tf.io.gfile.rename(records.manifest_path(staging),
                     records.manifest_path(out_dir), overwrite=True)
  tf.io.gfile.rmtree(staging)


def _remove_if_there(path: str) -> None:
  if tf.io.gfile.exists(path):
    tf.io.gfile.remove(path)


def _manifest(table: csv_rows.Table, options: shard_plan.Options,
              unlisted: int, notes_by_split: dict,
              skipped: Sequence) -> records.Manifest:
  """The manifest of a finished conversion, built from the shards' notes."""
  by_reason = collections.Counter(entry[3] for entry in skipped)
  unique = int(table.first.sum())
  return records.Manifest(
      splits={split: records.SplitInfo.build(
          [_noted_shard(note) for note in notes],
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
          report=SKIPPED_REPORT if options.skip_bad_images else None),
      store_size=options.store_size,
      store_format=options.store_format)


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
