"""Tests of posternet/serve/evaluate.py and the exact NumPy metrics it reports.

The reference is computed here from first principles (every positive/negative
pair for ROC-AUC, a loop over thresholds for AP) on the in-memory model's
probabilities for the same posters, and compared with what the command
prints and writes. The command runs as a real subprocess where its output
and exit code are what is tested.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import bad_inputs
import record_fixtures
from posternet import cli
from posternet.serve import evaluate
from posternet.serve import report
from posternet.serve import export
from posternet import genres
from posternet.data import images
from posternet.data import pipeline
from posternet import metrics
from posternet.model import networks
from posternet.data import records
from posternet.train import config as train_config
from posternet.train import trainer
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZE = (24, 24)
METRIC_KEYS = ('roc_auc', 'average_precision', 'precision_at_3', 'bce',
               'f1_micro', 'f1_macro')


# The reference: definitions, written out the slow and obvious way.


def _auc(positive, scores):
  """P(a positive outscores a negative), ties counting half."""
  pos, neg = scores[positive], scores[~positive]
  wins = (pos[:, None] > neg[None, :]).sum()
  ties = (pos[:, None] == neg[None, :]).sum()
  return (wins + 0.5 * ties) / (len(pos) * len(neg))


def _ap(positive, scores):
  """sum_n (R_n - R_{n-1}) P_n over the distinct thresholds, highest first."""
  total, previous_recall = 0.0, 0.0
  for threshold in sorted(set(scores.tolist()), reverse=True):
    predicted = scores >= threshold
    hits = (predicted & positive).sum()
    recall = hits / positive.sum()
    total += (recall - previous_recall) * hits / predicted.sum()
    previous_recall = recall
  return total


def _reference(labels, probabilities):
  """Every reported metric, from the definitions."""
  positive = labels > 0.5
  aucs = [_auc(positive[:, g], probabilities[:, g])
          for g in range(genres.NUM_GENRES)
          if 0 < positive[:, g].sum() < len(labels)]
  aps = [_ap(positive[:, g], probabilities[:, g])
         for g in range(genres.NUM_GENRES) if positive[:, g].any()]
  top3 = [np.argsort(-row, kind='stable')[:3] for row in probabilities]
  p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
  predicted = probabilities > 0.5
  tp = (predicted & positive).sum(axis=0)
  fp = (predicted & ~positive).sum(axis=0)
  fn = (~predicted & positive).sum(axis=0)
  f1 = [2 * t / (2 * t + f + n) if t + f + n else 0.0
        for t, f, n in zip(tp, fp, fn)]
  return {
      'roc_auc': np.mean(aucs),
      'average_precision': np.mean(aps),
      'precision_at_3': np.mean([positive[i, top].mean()
                                 for i, top in enumerate(top3)]),
      'bce': np.mean(-(labels * np.log(p) + (1 - labels) * np.log(1 - p))),
      'f1_micro': 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()),
      'f1_macro': np.mean(f1),
  }


# The exact metrics.


def test_average_precision_and_auc_on_hand_checked_examples():
  labels = np.array([[0, 1, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0]])
  scores = np.array([[0.1, 0.9, 0.1], [0.4, 0.5, 0.2], [0.35, 0.5, 0.3],
                     [0.8, 0.2, 0.4], [0.05, 0.2, 0.5]])
  # Genre 0 (scikit-learn's documented example, plus a fifth poster below
  # all): thresholds 0.8 (P 1, R 1/2), 0.4 (P 1/2, R 1/2), 0.35 (P 2/3,
  # R 1), then no new recall: AP = 1/2 + 0 + 1/2 * 2/3 = 5/6.
  # Genre 1, with ties: 0.9 (P 1, R 1/3); 0.5, two posters entering
  # together (P 2/3, R 2/3); 0.2, two more (P 3/5, R 1):
  # AP = 1/3 + 1/3 * 2/3 + 1/3 * 3/5 = 34/45.
  # Genre 2 has no positive: undefined.
  np.testing.assert_allclose(
      metrics.average_precision_per_genre(labels, scores),
      [5 / 6, 34 / 45, np.nan])
  # Genre 0: of 2 x 3 positive/negative pairs, only 0.35 < 0.4 is wrong.
  # Genre 1: positives 0.9, 0.5, 0.2 vs negatives 0.5, 0.2: 0.9 wins both,
  # 0.5 ties one and wins one, 0.2 loses one and ties one: 4 of 6.
  np.testing.assert_allclose(metrics.roc_auc_per_genre(labels, scores),
                             [5 / 6, 4 / 6, np.nan])


def test_auc_of_the_documented_example_is_three_quarters():
  labels = np.array([[0], [0], [1], [1]])
  scores = np.array([[0.1], [0.4], [0.35], [0.8]])
  assert metrics.roc_auc_per_genre(labels, scores)[0] == pytest.approx(0.75)
  assert metrics.average_precision_per_genre(labels, scores)[0] == (
      pytest.approx(5 / 6))


def test_exact_metrics_match_the_definitions_with_ties():
  rng = np.random.default_rng(0)
  labels = (rng.random((60, genres.NUM_GENRES)) < 0.2).astype(np.float32)
  labels[:, 3] = 0  # a genre without positives
  labels[:, 4] = 1  # and one without negatives
  scores = np.round(rng.random(labels.shape), 1).astype(np.float32)  # ties
  got = metrics.score_arrays(labels, scores)
  want = _reference(labels, scores)
  for key in METRIC_KEYS:
    assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_constant_predictions_score_as_base_rates():
  labels = np.zeros((10, genres.NUM_GENRES), np.float32)
  labels[:5, 7] = labels[:2, 4] = labels[:1, 0] = 1
  frequencies = np.linspace(0.3, 0.01, genres.NUM_GENRES)
  got = metrics.score_arrays(labels, np.tile(frequencies, (10, 1)))
  assert got['roc_auc'] == pytest.approx(0.5)
  assert got['average_precision'] == pytest.approx(np.mean([.5, .2, .1]))
  # The three highest frequencies are genres 0, 1, 2: one hit of 30.
  assert got['precision_at_3'] == pytest.approx(1 / 30)


# The command, on an exported model and synthetic records.


def _reference_probabilities(model, val):
  """The in-memory model on the val posters, decoded directly."""
  posters = np.stack([images.decode_jpeg(r['image/encoded']).numpy()
                      for r in val])
  return model(pipeline.model_inputs({pipeline.IMAGE: posters}),
               training=False).numpy()


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """Records, an exported small_cnn (untrained: any numbers will do), and
  the reference scores on the val posters.
  """
  folder = tmp_path_factory.mktemp('evaluate')
  records_dir = str(folder / 'records')
  record_fixtures.write_records(records_dir, num_train=60, num_val=40,
                                image_hw=IMAGE_SIZE, seed=4)
  keras.utils.set_random_seed(5)
  model = networks.build_model('small_cnn', IMAGE_SIZE)
  # Spread the untrained outputs over (0.01, 0.99): some genres cross 0.5
  # for F1, and no two posters' probabilities come within float noise of
  # each other, where a last-bit difference between batchings could swap
  # their order (the closest pair is ~40 float32 steps apart).
  kernel = model.get_layer('genres').kernel
  kernel.assign(kernel * 20)
  model_dir = str(folder / 'export')
  export.export_model(model, model_dir, image_size=IMAGE_SIZE,
                      thresholds=export.Thresholds(
                          np.full(genres.NUM_GENRES, 0.5), (), 20))
  val = record_fixtures.read_split(records_dir, 'val')
  train = record_fixtures.read_split(records_dir, 'train')
  return dict(
      folder=folder, records=records_dir, model=model_dir, val=val,
      labels=np.stack([r['poster/labels'] for r in val]),
      probabilities=_reference_probabilities(model, val),
      train_frequencies=np.mean([r['poster/labels'] for r in train], axis=0,
                                dtype=np.float64))


def _evaluate_command(*args):
  return subprocess.run(
      [sys.executable, '-m', 'posternet.evaluate', *args], cwd=REPO,
      env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3'),
      capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def records_run(exported):
  """`python -m posternet.evaluate --model=… --records=…`, run once."""
  run = _evaluate_command(f'--model={exported["model"]}',
                          f'--records={exported["records"]}')
  assert run.returncode == 0, run.stderr
  path = os.path.join(exported['model'], 'evaluation-val.json')
  with open(path) as f:
    return dict(stdout=run.stdout, document=json.load(f), path=path)


def test_records_metrics_match_a_direct_computation(exported, records_run):
  document = records_run['document']
  want = _reference(exported['labels'], exported['probabilities'])
  for key in METRIC_KEYS:
    assert document['metrics']['model'][key] == pytest.approx(
        want[key], abs=1e-5), key
  assert document['scored'] == {'kind': 'records',
                                'records': exported['records'],
                                'split': 'val', 'posters': 40, 'skipped': []}


def test_base_rates_are_the_train_split_frequencies(exported, records_run):
  document = records_run['document']
  frequencies = exported['train_frequencies']
  np.testing.assert_allclose(
      [document['base_rates']['frequencies'][g] for g in genres.GENRES],
      frequencies, atol=1e-9)
  assert document['base_rates']['source'] == 'records'
  assert document['base_rates']['posters'] == 60
  base = np.tile(frequencies, (40, 1))
  want = _reference(exported['labels'], base)
  got = document['metrics']['base_rates']
  for key in METRIC_KEYS:
    assert got[key] == pytest.approx(want[key], abs=1e-9), key
  positive = exported['labels'] > 0.5
  assert got['roc_auc'] == pytest.approx(0.5)
  shares = positive.mean(axis=0)
  assert got['average_precision'] == pytest.approx(shares[shares > 0].mean())
  top3 = np.argsort(-frequencies, kind='stable')[:3]
  assert got['precision_at_3'] == pytest.approx(positive[:, top3].mean())


def test_per_genre_table_by_support(exported, records_run):
  rows = records_run['document']['genres']
  positive = exported['labels'] > 0.5
  assert [r['support'] for r in rows] == sorted(positive.sum(axis=0),
                                                reverse=True)
  for row in rows:
    g = genres.GENRES.index(row['genre'])
    assert row['support'] == positive[:, g].sum()
    if row['support'] == 0:
      assert row['roc_auc'] is None and row['average_precision'] is None
    else:
      assert row['average_precision'] == pytest.approx(
          _ap(positive[:, g], exported['probabilities'][:, g]), abs=1e-5)
      assert row['roc_auc'] == pytest.approx(
          _auc(positive[:, g], exported['probabilities'][:, g]), abs=1e-5)


def test_printed_report_matches_the_json(records_run):
  stdout, document = records_run['stdout'], records_run['document']
  lines = stdout.splitlines()
  assert lines[0].startswith(f'model {document["model"]} (24x24) on the val '
                             'split of ')
  assert lines[-1] == f'JSON: {records_run["path"]}'
  for key, label, decimals in report.METRIC_ROWS:
    line = next(l for l in lines if l.startswith(label))
    model_value, base_value = line[len(label):].split()
    assert model_value == f'{document["metrics"]["model"][key]:.{decimals}f}'
    assert base_value == (
        f'{document["metrics"]["base_rates"][key]:.{decimals}f}')
  table = lines[lines.index(next(l for l in lines
                                 if l.startswith('genre '))) + 1:-2]
  assert [l.split()[0] for l in table] == [
      r['genre'] for r in document['genres']]
  text = lambda value: '-' if value is None else f'{value:.3f}'
  for line, row in zip(table, document['genres']):
    assert line.split()[1:] == [str(row['support']), text(row['roc_auc']),
                                text(row['average_precision'])]


# CSV mode.


def _write_csv_and_images(folder, val, repeat_first=True):
  """The val posters as the tutorial's CSV + Images/, one row repeated."""
  images_dir = folder / 'Images'
  images_dir.mkdir(parents=True)
  rows = []
  for record in val:
    poster_id = record['poster/id'].decode()
    (images_dir / f'{poster_id}.jpg').write_bytes(record['image/encoded'])
    labels = record['poster/labels']
    rows.append([poster_id, genres.genre_string(genres.names_of(labels)),
                 *(int(x) for x in labels)])
  if repeat_first:
    rows.append(rows[0])  # as in the real CSV: written once, counted
  path = folder / 'posters.csv'
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(genres.CSV_COLUMNS)
    writer.writerows(rows)
  return str(path), str(images_dir)


def test_csv_mode_gives_the_records_numbers(exported, records_run, tmp_path,
                                            capsys):
  csv_path, images_dir = _write_csv_and_images(tmp_path, exported['val'])
  document = evaluate.evaluate(exported['model'], csv_path=csv_path,
                               images_dir=images_dir,
                               records_dir=exported['records'])
  records_document = records_run['document']
  for who in ('model', 'base_rates'):
    for key in METRIC_KEYS:
      assert document['metrics'][who][key] == pytest.approx(
          records_document['metrics'][who][key], abs=1e-5), (who, key)
  assert document['base_rates'] == records_document['base_rates']
  assert document['scored']['posters'] == 40
  assert document['scored']['duplicate_rows'] == 1
  out = capsys.readouterr().out
  assert '1 repeated CSV rows scored once' in out
  assert out.splitlines()[-1] == (
      f'JSON: {os.path.join(exported["model"], "evaluation-csv-posters.json")}')


def test_csv_without_records_takes_base_rates_from_its_labels(
    exported, tmp_path, capsys):
  csv_path, images_dir = _write_csv_and_images(tmp_path, exported['val'],
                                               repeat_first=False)
  json_out = str(tmp_path / 'out' / 'scores.json')
  document = evaluate.evaluate(exported['model'], csv_path=csv_path,
                               images_dir=images_dir, json_out=json_out)
  np.testing.assert_allclose(
      [document['base_rates']['frequencies'][g] for g in genres.GENRES],
      exported['labels'].mean(axis=0), atol=1e-9)
  assert document['base_rates']['source'] == 'csv'
  assert 'no --records given' in capsys.readouterr().out
  with open(json_out) as f:
    assert json.load(f) == document


def test_unreadable_poster_is_an_error_or_a_counted_skip(exported, tmp_path,
                                                         capsys):
  csv_path, images_dir = _write_csv_and_images(tmp_path, exported['val'])
  bad_id = exported['val'][3]['poster/id'].decode()
  bad = os.path.join(images_dir, f'{bad_id}.jpg')
  with open(bad, 'r+b') as f:
    f.truncate(100)
  with pytest.raises(cli.UserError, match=(
      rf'^{re.escape(bad)} \(line 5 of posters.csv, Id {bad_id}\): '
      r'truncated or corrupt image: .*--skip_bad_images')):
    evaluate.evaluate(exported['model'], csv_path=csv_path,
                      images_dir=images_dir, json_out=str(tmp_path / 'x.json'))
  document = evaluate.evaluate(exported['model'], csv_path=csv_path,
                               images_dir=images_dir, skip_bad_images=True,
                               json_out=str(tmp_path / 'y.json'))
  assert document['scored']['posters'] == 39
  assert [(s['file'], s['line'], s['reason'])
          for s in document['scored']['skipped']] == [
              (bad, 5, 'truncated or corrupt image')]
  keep = np.arange(40) != 3
  want = _reference(exported['labels'][keep],
                    exported['probabilities'][keep])
  assert document['metrics']['model']['roc_auc'] == pytest.approx(
      want['roc_auc'], abs=1e-5)
  out = capsys.readouterr().out
  assert ('skipped 1 posters that could not be read (--skip_bad_images):\n'
          f'  {bad} (line 5): truncated or corrupt image') in out


# Outputs never replaced by surprise (issue 21, point 2).


def test_each_evaluation_has_its_own_json_and_others_are_kept(
    exported, tmp_path):
  model = str(tmp_path / 'export')
  shutil.copytree(exported['model'], model)
  # A CSV named train.csv and the records' train split: two files.
  (tmp_path / 'a').mkdir()
  csv_path, _ = _write_csv_and_images(tmp_path / 'a', exported['val'])
  train_csv = str(tmp_path / 'a' / 'train.csv')
  os.rename(csv_path, train_csv)
  split = _evaluate_command(f'--model={model}',
                            f'--records={exported["records"]}',
                            '--split=train')
  assert split.returncode == 0, split.stderr[-2000:]
  csv_run = _evaluate_command(f'--model={model}', f'--csv={train_csv}')
  assert csv_run.returncode == 0, csv_run.stderr[-2000:]
  by_split = os.path.join(model, 'evaluation-train.json')
  by_csv = os.path.join(model, 'evaluation-csv-train.json')
  assert split.stdout.splitlines()[-1] == f'JSON: {by_split}'
  assert csv_run.stdout.splitlines()[-1] == f'JSON: {by_csv}'
  with open(by_split) as f:
    assert json.load(f)['scored']['split'] == 'train'
  with open(by_csv) as f:
    kept = f.read()
  assert json.loads(kept)['scored']['csv'] == train_csv
  # Another train.csv, elsewhere: refused before scoring, the file kept.
  (tmp_path / 'b').mkdir()
  other, _ = _write_csv_and_images(tmp_path / 'b', exported['val'][:20])
  other_train = str(tmp_path / 'b' / 'train.csv')
  os.rename(other, other_train)
  refused = _evaluate_command(f'--model={model}', f'--csv={other_train}')
  assert refused.returncode == cli.EXIT_USER_ERROR
  assert refused.stdout == '' and 'Traceback' not in refused.stderr
  assert refused.stderr.strip().splitlines() == [
      f'error: {by_csv} holds the evaluation of other posters, kept: give '
      '--json_out=PATH, or --overwrite to replace it']
  with open(by_csv) as f:
    assert f.read() == kept
  # --overwrite replaces it.
  replaced = _evaluate_command(f'--model={model}', f'--csv={other_train}',
                               '--overwrite')
  assert replaced.returncode == 0, replaced.stderr[-2000:]
  with open(by_csv) as f:
    assert json.load(f)['scored']['posters'] == 20


def test_the_same_posters_again_replace_their_json(exported, tmp_path,
                                                   capsys):
  json_out = str(tmp_path / 'scores.json')
  for _ in range(2):
    evaluate.evaluate(exported['model'], records_dir=exported['records'],
                      json_out=json_out)
  assert capsys.readouterr().out.splitlines()[-1] == (
      f'JSON: {json_out} (replaces the earlier evaluation of the same '
      'posters)')
  with pytest.raises(cli.UserError, match='holds the evaluation of other'):
    evaluate.evaluate(exported['model'], records_dir=exported['records'],
                      split='train', json_out=json_out)


# Bad input, as a user meets it.


def test_undecodable_record_is_named_by_shard_and_id(exported, tmp_path):
  """Issue 12, case 6: a record that reads (valid CRC) but does not decode."""
  folder = str(tmp_path / 'damaged')
  shutil.copytree(exported['records'], folder)
  shard, record, poster_id = record_fixtures.replace_image(
      records.Manifest.read(folder), 'val', 7, bad_inputs.truncated_jpeg())
  with pytest.raises(cli.UserError) as error:
    evaluate.evaluate(exported['model'], records_dir=folder,
                      json_out=str(tmp_path / 'evaluation.json'))
  assert str(error.value).startswith(
      f'a damaged record in {folder}: {shard} record {record}: Id '
      f'{poster_id}: the image does not decode (')


@pytest.mark.parametrize('what', ['model', 'records', 'csv'])
def test_a_bad_path_is_one_line_and_exit_2(exported, tmp_path, what):
  missing = str(tmp_path / 'missing')
  args = {'model': [f'--model={missing}', f'--records={exported["records"]}'],
          'records': [f'--model={exported["model"]}', f'--records={missing}'],
          'csv': [f'--model={exported["model"]}', f'--csv={missing}.csv']}
  expected = {
      'model': f'error: model folder {missing} does not exist; train one '
               'with `python -m posternet.train`',
      'records': f'error: records folder {missing} does not exist; make it '
                 'with `make records`',
      'csv': f'error: CSV file {missing}.csv not found'}
  run = _evaluate_command(*args[what])
  assert run.returncode == cli.EXIT_USER_ERROR
  assert 'Traceback' not in run.stderr and run.stdout == ''
  assert run.stderr.strip().splitlines() == [expected[what]]


@pytest.mark.parametrize('resize_on', ['device', 'host'])
def test_training_summary_and_evaluate_give_the_same_scores(
    make_records, tmp_path, resize_on):
  # One ROC-AUC (posternet.metrics) on the same predictions: what training
  # writes in summary.json is what evaluate reports for its export, which
  # reads the records as training did (posters of several sizes: the
  # device, or the host, resizes them).
  manifest = make_records('same', num_train=64, num_val=48, image_hw=None,
                          seed=7)
  summary = trainer.run(train_config.build(
      records=manifest.records_dir, logdir=str(tmp_path), run_name='same',
      model='small_cnn', image_size=IMAGE_SIZE, batch_size=16, epochs=2,
      learning_rate=3e-3, verbose=0, dashboard_every_epochs=0,
      resize_on=resize_on, augment='crop,flip,color'))
  info = export.read_info(summary['export_dir'])
  assert info['resize_on'] == resize_on
  run = _evaluate_command(f'--model={summary["export_dir"]}',
                          f'--records={manifest.records_dir}',
                          '--batch_size=16')
  assert run.returncode == 0, run.stderr
  with open(os.path.join(summary['export_dir'], 'evaluation-val.json')) as f:
    evaluated = json.load(f)['metrics']['model']
  for key in ('roc_auc', 'average_precision', 'precision_at_3'):
    assert abs(summary['val'][key] - evaluated[key]) <= 1e-6, key
  # The best epoch's score in the run's history is that same number.
  with open(tmp_path / 'same' / 'history.csv') as f:
    history = list(csv.DictReader(f))
  epoch = history[summary['exported_epoch'] - 1]
  assert abs(float(epoch['val_roc_auc']) - summary['val']['roc_auc']) <= 1e-6
