"""The converter's hold on --out: the lock, the staging folder, publishing.

Staging, TFDS-style: the new set is built in `.make_records/` under --out,
beside the set already there, which stays whole and valid until the new one
is complete. Then it is published (publish): the old manifest goes first,
then the shards move in, the new manifest last. A run that fails or is
stopped leaves a finished set as it was.

Resume: the plan's key (shard_plan.make_plan) is kept in staging with a
note per finished shard, its sha256 included (save_note). A rerun with the
same key reuses a finished shard only if its bytes still have that checksum
(start_or_resume; else it is written again); any other plan starts afresh.

One converter at a time per --out: lock_output holds `.make_records.lock`
there (files.FolderLock) for the whole run. The disk check (before any
shard is written) is here too: it is about the folder, not the posters.
"""

import json
import os
import re
import shutil
import sys
from typing import Sequence

from absl import logging
import tensorflow as tf

from posternet import cli
from posternet import files
from posternet.data import records
from posternet import remote
from posternet.data import shard_plan

# skip_bad_images' list of the posters left out: one of a set's files.
SKIPPED_REPORT = 'skipped.csv'
# The staging folder: the new set and its resume notes, until published.
STATE_DIR = '.make_records'
# The lock file of the run that holds --out (files.FolderLock).
LOCK_FILE = '.make_records.lock'

_SHARD_FILE = re.compile(r'^(train|val)-\d{5}-of-\d{5}\.tfrecord$')


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


def lock_output(out_dir: str) -> files.FolderLock:
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
    raise unwritable(out_dir, e) from None
  except OSError as e:
    raise cli.UserError(f'cannot write to {out_dir}: {e.strerror}') from None


def staging_dir(out_dir: str) -> str:
  """The staging folder under --out: the new set, until published."""
  return os.path.join(out_dir, STATE_DIR)


def start_or_resume(out_dir: str, shards: Sequence[shard_plan.Shard],
                    key: str) -> dict:
  """Keeps this plan's finished shards, else starts afresh in staging.

  Only the staging folder is touched: the set already in --out stays whole
  until publish.

  Returns:
    {shard file: its note} for shards finished by an earlier run.
  """
  staging = staging_dir(out_dir)
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
    if note and _still_finished(out_dir, noted_shard(note)):
      notes[shard.file] = note
  return notes


def _still_finished(out_dir: str, noted: records.ShardInfo) -> bool:
  """Whether a noted shard's bytes still have the checksum of its note.

  The staged copy decides; a shard no longer staged may already have been
  published (a run stopped while publishing). A damaged copy is said once
  and written again.
  """
  for folder in (staging_dir(out_dir), out_dir):
    path = os.path.join(folder, noted.file)
    if tf.io.gfile.exists(path):
      if records.size_and_sha256(path) == (noted.bytes, noted.sha256):
        return True
      logging.warning('%s: its bytes no longer have the sha256 noted when it '
                      'was finished; writing it again', path)
      return False
  return False


def check_disk_space(out_dir: str, pending: Sequence[shard_plan.Shard],
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


def noted_shard(note: dict) -> records.ShardInfo:
  """The records.ShardInfo a note holds."""
  return records.ShardInfo.from_dict(note['shard'])


def unwritable(out_dir: str, error: tf.errors.OpError) -> cli.UserError:
  """The one line for an output folder TensorFlow cannot write."""
  return cli.UserError(f'cannot write to {out_dir}: {cli.tf_message(error)}')


def save_note(out_dir: str, note: dict) -> str:
  """Keeps a finished shard's note in staging; returns the shard's file."""
  shard_file = noted_shard(note).file
  files.write_atomically(os.path.join(staging_dir(out_dir),
                                      shard_file + '.json'), _json_bytes(note))
  return shard_file


# --- Publishing: the staged set replaces the one in --out. ---


def publish(out_dir: str, new_files: Sequence[str]) -> None:
  """Replaces the set in --out by the staged one, its manifest last.

  The old manifest goes first, so --out never claims a mix of old and new
  shards; then what the old set had and the new one has not, then the new
  files move in. A run stopped in between leaves no manifest and the notes
  in staging: its rerun finds each shard staged or already moved (by
  checksum) and publishes again.
  """
  staging = staging_dir(out_dir)
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
