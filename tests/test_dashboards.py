"""Tests of posternet/observe/dashboards.py: what training writes for TensorBoard.

One short real training run (small_cnn on tiny synthetic records, through
trainer.run) is shared by the end-to-end tests, which read its event files back
with TensorBoard's own reader and serve them with a real `tensorboard`
process on a loopback port. The rest are unit tests of the pieces.
"""

import csv
import json
import os
import signal
import subprocess
import time
import urllib.request

from google.protobuf import text_format
import numpy as np
import pytest
import tensorflow as tf
from tensorboard import context
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.compat.proto import graph_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins import base_plugin
from tensorboard.plugins.graph import graphs_plugin
from tensorboard.plugins.hparams import metadata as hparams_metadata

import record_fixtures
from posternet import cli
from posternet.observe import dashboards
from posternet.observe import genre_dashboards
from posternet import genres
from posternet.train import hardware
from posternet.observe import hparams_dashboard
from posternet import metrics
from posternet import quiet
from posternet.data import records
from posternet.observe import render
from posternet.observe import step_scalars
from posternet.train import trainer
from posternet.train import config as train_config
SIZE = 24
EPOCHS = 2
RUN = 'dash'


# --- The input clock: honest in both directions. ---


def _sleepy(seconds):
  """A py_function body that takes `seconds` (a slow producer or step)."""
  def body(x):
    time.sleep(seconds)
    return x
  return body


def _wait_share(producer_seconds, consumer_seconds, steps=25):
  """The share of wall time a consumer loop spent blocked on get_next."""
  clock = step_scalars.InputClock()
  dataset = tf.data.Dataset.range(10**6)
  if producer_seconds:
    dataset = dataset.map(lambda x: tf.py_function(
        _sleepy(producer_seconds), [x], tf.int64))
  iterator = iter(clock.wrap(dataset.prefetch(2)))
  step = tf.function(lambda it: it.get_next())
  step(iterator)  # trace and fill first
  start, waited = time.perf_counter(), clock.seconds()
  for _ in range(steps):
    step(iterator)
    time.sleep(consumer_seconds)
  return (clock.seconds() - waited) / (time.perf_counter() - start)


def test_input_clock_measures_the_wait_for_input():
  assert _wait_share(producer_seconds=0.04, consumer_seconds=0) > 0.8
  assert _wait_share(producer_seconds=0, consumer_seconds=0.04) < 0.1


# --- Per-genre results from confusion counts. ---


def test_genre_results_are_the_exact_per_genre_scores():
  rng = np.random.RandomState(0)
  labels = (rng.rand(60, genres.NUM_GENRES) < 0.2).astype(np.float32)
  labels[:, 3] = 0  # a genre without positives: NaN, not 0
  probabilities = np.clip(labels * 0.3 + rng.rand(*labels.shape) * 0.7, 0, 1)
  auc, support = genre_dashboards.genre_results(labels, probabilities)
  np.testing.assert_array_equal(support, labels.sum(axis=0))
  assert np.isnan(auc[3])
  # The mean over the defined genres is the epoch's val_roc_auc.
  assert np.nanmean(auc) == pytest.approx(
      metrics.summary_scores(labels, probabilities)['roc_auc'], abs=1e-12)
  one = labels[:, 7] > 0
  pos, neg = probabilities[one, 7], probabilities[~one, 7]
  assert auc[7] == pytest.approx((pos[:, None] > neg[None, :]).mean())


def test_pr_curve_summary_holds_the_counts():
  labels = np.zeros((4, genres.NUM_GENRES), np.float32)
  labels[:2, 5] = 1
  probabilities = np.full_like(labels, 0.1)
  probabilities[:, 5] = [0.9, 0.2, 0.8, 0.1]
  summary = genre_dashboards.pr_curve_summary('pr_curves/x', labels,
                                              probabilities, 5)
  value = summary.value[0]
  assert value.tag == 'pr_curves/x'
  assert value.metadata.plugin_data.plugin_name == 'pr_curves'
  data = tf.make_ndarray(value.tensor)
  assert data.shape == (6, 201)
  tp, fp, tn, fn, precision, recall = data
  assert (tp[0], fp[0], tn[0], fn[0]) == (2, 2, 0, 0)
  threshold_half = 100  # thresholds are i/200: index 100 is 0.5
  assert (tp[threshold_half], fp[threshold_half]) == (1, 1)
  assert precision[threshold_half] == pytest.approx(0.5)
  assert recall[threshold_half] == pytest.approx(0.5)


# --- The poster grid. ---


def test_top_genres_and_grid():
  probabilities = np.linspace(0, 1, genres.NUM_GENRES)
  assert [i for i, _ in genres.top_k(probabilities)] == [24, 23, 22]
  images = np.zeros((5, 40, 30, 3), np.uint8)
  labels = np.zeros((5, genres.NUM_GENRES), np.float32)
  labels[:, 24] = 1  # the top prediction is right (green)...
  labels[0, 0] = 1   # ...and a true genre not predicted
  grid = render.poster_grid(images, labels, np.tile(probabilities, (5, 1)),
                            [f'tt{i}' for i in range(5)])
  columns = min(render.GRID_COLUMNS, 5)
  assert grid.dtype == np.uint8 and grid.shape[2] == 3
  assert grid.shape[1] == columns * render.TILE_WIDTH
  tile_poster_height = round(render.TILE_WIDTH * 40 / 30)
  assert grid.shape[0] > 2 * tile_poster_height  # two rows, with captions
  red, green = grid[..., 0].astype(int), grid[..., 1].astype(int)
  assert np.any(green - red > 60)   # a right prediction
  assert np.any(red - green > 60)   # wrong ones
  table = genre_dashboards.grid_table(labels, np.tile(probabilities, (5, 1)),
                                      ['tt0'] * 5)
  assert '| tt0 | Action, Western | Western 1.00 ✓, War 0.96,' in table


def test_profile_steps_parse():
  assert dashboards.parse_profile_steps('10,20') == (10, 20)
  assert dashboards.parse_profile_steps('5') == (5, 5)
  assert dashboards.parse_profile_steps(None) is None
  assert dashboards.parse_profile_steps('') is None
  for bad in ('20,10', '0,3', 'a,b', '1,2,3'):
    with pytest.raises(cli.UserError, match='--profile_steps'):
      dashboards.parse_profile_steps(bad)


def test_hparams_values_are_plain():
  values = hparams_dashboard.hparams_values(
      {'image_size': (64, 48), 'model_size': None, 'logdir': 'runs',
       'cache': False, 'learning_rate': 0.003},
      {'precision': 'float32', 'num_gpus': 0})
  # model_size: the size the network is built at, image_size when unset.
  assert values == {'image_size': '64x48', 'model_size': '64x48',
                    'cache': False, 'learning_rate': 0.003,
                    'precision': 'float32', 'num_gpus': 0}


# --- One real training run, read back. ---


@pytest.fixture(scope='module')
def trained(tmp_path_factory, make_records):
  """(run folder, records folder, summary) of a 2-epoch run with dashboards."""
  base = tmp_path_factory.mktemp('dash')
  records_dir = make_records(num_train=64, num_val=24,
                             image_hw=(SIZE, SIZE)).records_dir
  config = train_config.build(
      records=records_dir, logdir=str(base / 'runs'), run_name=RUN,
      model='small_cnn', image_size=(SIZE, SIZE), batch_size=16,
      epochs=EPOCHS, learning_rate=3e-3, export_dir='', verbose=0,
      log_every_steps=2, profile_steps=(2, 3))
  summary = trainer.run(config)
  return train_config.run_dir(config), records_dir, summary


def _events(folder):
  accumulator = event_accumulator.EventAccumulator(
      folder, size_guidance={kind: 0 for kind in
                             event_accumulator.DEFAULT_SIZE_GUIDANCE})
  accumulator.Reload()
  return accumulator


def _values(accumulator, tag):
  """[(step, value)] of a scalar written by tf.summary (a TF2 tensor)."""
  return [(e.step, float(tf.make_ndarray(e.tensor_proto)))
          for e in accumulator.Tensors(tag)]


def test_train_scalars_every_n_steps_and_per_epoch(trained):
  run_dir, _, summary = trained
  events = _events(os.path.join(run_dir, 'train'))
  steps = summary['steps']
  assert steps == EPOCHS * 4
  # Training logs its loss; the scores are validation's (val_scores).
  assert 'batch_roc_auc' not in events.Tags()['scalars'] + events.Tags()[
      'tensors']
  for name in ('loss', 'learning_rate', 'images_per_sec',
               'input_wait_share'):
    logged = _values(events, f'batch_{name}')
    assert [s for s, _ in logged] == list(range(2, steps + 1, 2)), name
    assert all(np.isfinite(v) for _, v in logged)
  assert all(v > 0 for _, v in _values(events, 'batch_images_per_sec'))
  assert all(v == pytest.approx(3e-3)
             for _, v in _values(events, 'batch_learning_rate'))
  for name in ('loss', 'images_per_sec', 'input_wait_share',
               'learning_rate'):
    assert [s for s, _ in _values(events, f'epoch_{name}')] == [0, 1], name
  shares = [v for _, v in _values(events, 'batch_input_wait_share') +
            _values(events, 'epoch_input_wait_share')]
  assert all(0 <= v <= 1 for v in shares)
  with open(os.path.join(run_dir, 'history.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [float(r['input_wait_share']) for r in rows] == pytest.approx(
      [v for _, v in _values(events, 'epoch_input_wait_share')], abs=1e-6)


def test_validation_dashboards(trained):
  run_dir, records_dir, summary = trained
  events = _events(os.path.join(run_dir, 'validation'))
  tags = set(events.Tags()['tensors'])
  val_labels = np.stack([r[records.LABELS_KEY] for r in
                         record_fixtures.read_split(records_dir, 'val')])
  support = val_labels.sum(axis=0)
  for step in range(EPOCHS):
    aucs = []
    for genre, name in enumerate(genres.GENRES):
      # Support of the val split, not the train split: the val pass's state.
      assert _values(events, f'genre_support/{name}')[step] == (
          step, support[genre])
      assert f'pr_curves/{name}' in tags
      if 0 < support[genre] < len(val_labels):
        _, auc = _values(events, f'genre_roc_auc/{name}')[step]
        assert 0 <= auc <= 1
        aucs.append(auc)
      else:
        assert f'genre_roc_auc/{name}' not in tags
    _, logged = _values(events, 'epoch_roc_auc')[step]
    assert np.mean(aucs) == pytest.approx(logged, abs=1e-6)  # one ROC-AUC
  curve = tf.make_ndarray(events.Tensors('pr_curves/Drama')[-1].tensor_proto)
  assert curve.shape == (6, 201)
  assert curve[0, 0] + curve[3, 0] == support[genres.GENRES.index('Drama')]
  grid = events.Tensors('val_posters')
  assert [e.step for e in grid] == [0, 1]
  width, height = (int(x) for x in tf.make_ndarray(grid[-1].tensor_proto)[:2])
  assert width == render.GRID_COLUMNS * render.TILE_WIDTH
  assert height > 2 * render.TILE_WIDTH
  table = tf.make_ndarray(events.Tensors('val_posters_table')[-1]
                          .tensor_proto).item().decode()
  assert table.count('\n| tt') == genre_dashboards.GRID_POSTERS
  genre_table = tf.make_ndarray(events.Tensors('genre_table')[-1]
                                .tensor_proto).item().decode()
  assert genre_table.count('\n| ') == genres.NUM_GENRES
  for name, value in summary['val'].items():
    assert _values(events, f'final_{name}') == [
        (EPOCHS - 1, pytest.approx(value, abs=1e-6))]


def test_hparams_and_profile(trained):
  run_dir, _, _ = trained
  events = _events(run_dir)
  content = events.SummaryMetadata(
      hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
  start = hparams_metadata.parse_session_start_info_plugin_data(content)
  assert start.hparams['model'].string_value == 'small_cnn'
  assert start.hparams['batch_size'].number_value == 16
  assert start.hparams['image_size'].string_value == f'{SIZE}x{SIZE}'
  assert start.hparams['precision'].string_value in hardware.PRECISIONS
  assert 'logdir' not in start.hparams
  experiment = hparams_metadata.parse_experiment_plugin_data(
      events.SummaryMetadata(hparams_metadata.EXPERIMENT_TAG)
      .plugin_data.content)
  columns = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
  assert {('validation', 'final_roc_auc'), ('train', 'epoch_loss'),
          ('train', 'epoch_input_wait_share')} <= columns
  assert {h.name for h in experiment.hparam_infos} == set(start.hparams)
  assert start.hparams['model_size'].string_value == f'{SIZE}x{SIZE}'
  assert {h.name for h in experiment.hparam_infos if h.differs} == set(
      hparams_dashboard.KEY_HPARAMS)
  traces = tf.io.gfile.glob(os.path.join(run_dir, 'train', 'plugins',
                                         'profile', '*', '*.xplane.pb'))
  assert traces and os.path.getsize(traces[0]) > 0


# --- A real tensorboard serves it. ---


def _get(port, path, body=None):
  """GET path (POST with a JSON body) from the local tensorboard: bytes."""
  request = urllib.request.Request(
      f'http://127.0.0.1:{port}{path}',
      data=None if body is None else json.dumps(body).encode(),
      headers={'Content-Type': 'application/json'})
  with urllib.request.urlopen(request, timeout=10) as response:
    return response.read()


def _get_json(port, path, body=None):
  """_get's answer, parsed as JSON."""
  return json.loads(_get(port, path, body))


def _poll(port, path, ready, seconds=60):
  """The JSON at path once ready(it) holds; the last answer on time-out."""
  deadline, answer = time.monotonic() + seconds, None
  while time.monotonic() < deadline:
    try:
      answer = _get_json(port, path)
      if ready(answer):
        return answer
    except OSError:
      pass  # not listening yet
    time.sleep(0.5)
  return answer


def _dashboard_order(hparam_infos):
  """(listed names, checked names), by the HParams dashboard's own rule.

  Its query pane (tf-hparams-query-pane in TensorBoard's index.js) keeps the
  order it is sent, sorts the `differs` ones first (a stable sort) and checks
  the first min(5, n).
  """
  infos = sorted(hparam_infos, key=lambda info: not info.get('differs'))
  names = [info['name'] for info in infos]
  return names, names[:5]


def test_tensorboard_serves_the_run(trained, tmp_path, run_make, free_port):
  run_dir, _, summary = trained
  logdir = os.path.dirname(run_dir)
  port = free_port()
  log = open(tmp_path / 'tensorboard.log', 'w')
  # As a user starts it, with TensorFlow's own log settings (issue 21,
  # point 5: no start-up lines from TensorFlow).
  process = run_make(
      'tensorboard', f'LOGDIR={logdir}', f'TB_PORT={port}',
      'TB_FLAGS=--reload_interval=1', start=True, stdout=log,
      stderr=subprocess.STDOUT,
      env={quiet.SHOW_TF_LOGS_ENV: None, 'TF_CPP_MIN_LOG_LEVEL': None})
  try:
    runs = {RUN, f'{RUN}/train', f'{RUN}/validation'}
    assert runs <= set(_poll(port, '/data/runs',
                             lambda r: runs <= set(r)) or ())
    wanted = {f'{RUN}/train': {'epoch_loss', 'batch_input_wait_share',
                               'epoch_images_per_sec'},
              f'{RUN}/validation': {'epoch_roc_auc', 'genre_roc_auc/Drama',
                                    'final_roc_auc'}}

    def has_scalars(tags):
      return all(names <= set(tags.get(run, {}))
                 for run, names in wanted.items())

    assert has_scalars(_poll(port, '/data/plugin/scalars/tags', has_scalars)
                       or {})
    images = _poll(port, '/data/plugin/images/tags',
                   lambda t: 'val_posters' in t.get(f'{RUN}/validation', {}))
    assert 'val_posters' in images[f'{RUN}/validation']
    curves = _get_json(port, '/data/plugin/pr_curves/tags')
    assert 'pr_curves/Drama' in curves[f'{RUN}/validation']
    groups = _get_json(port, '/data/plugin/hparams/session_groups', {
        'experimentName': '', 'startIndex': 0, 'sliceSize': 10,
        'allowedStatuses': ['STATUS_UNKNOWN', 'STATUS_SUCCESS'],
        'colParams': []})['sessionGroups']
    assert [group['name'] for group in groups] == [RUN]
    assert groups[0]['hparams']['model'] == 'small_cnn'
    metrics = {(m['name']['group'], m['name']['tag']): m['value']
               for m in groups[0]['metricValues']}
    assert metrics[('validation', 'final_roc_auc')] == pytest.approx(
        summary['val']['roc_auc'], abs=1e-6)
    assert 0 <= metrics[('train', 'epoch_input_wait_share')] <= 1
    # The experiment as the HParams dashboard asks for it.
    experiment = _get_json(port, '/data/plugin/hparams/experiment', {
        'experimentName': '', 'hparamsLimit': 1000})
    listed, checked = _dashboard_order(experiment['hparamInfos'])
    assert set(listed[:len(hparams_dashboard.KEY_HPARAMS)]) == set(
        hparams_dashboard.KEY_HPARAMS)
    assert checked == ['batch_size', 'epochs', 'image_size', 'learning_rate',
                       'model']
    # The Graphs tab: the run's graph list, then its first entry (Default,
    # the run graph) as an op graph, the requests the tab makes.
    graphs = _get_json(port, '/data/plugin/graphs/info')
    assert graphs[f'{RUN}/train']['run_graph']
    graph = text_format.Parse(
        _get(port, f'/data/plugin/graphs/graph?run={RUN}%2Ftrain'
             '&conceptual=false').decode(), graph_pb2.GraphDef())
    assert 'Conv2D' in {node.op for node in graph.node}
  finally:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    log.close()
  printed = (tmp_path / 'tensorboard.log').read_text()
  assert 'TensorBoard' in printed and f'http://127.0.0.1:{port}/' in printed
  for tensorflow_line in ('oneDNN', 'cuda', 'cuInit', 'absl::InitializeLog',
                          'cpu_feature_guard'):
    assert tensorflow_line not in printed, printed


# --- The Graphs tab, under both precisions. ---


def _graphs_plugin(logdir):
  """TensorBoard's graph plugin over logdir, on the data provider it serves."""
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(logdir)
  multiplexer.Reload()
  provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
  return graphs_plugin.GraphsPlugin(
      base_plugin.TBContext(logdir=logdir, data_provider=provider))


@pytest.mark.parametrize('precision', ['float32', 'mixed_bfloat16'])
def test_graphs_tab_draws_the_model(precision, tmp_path, make_records):
  records_dir = make_records(num_train=16, num_val=8,
                             image_hw=(SIZE, SIZE)).records_dir
  config = train_config.build(
      records=records_dir, logdir=str(tmp_path / 'runs'), run_name='g',
      model='small_cnn', image_size=(SIZE, SIZE), batch_size=8, epochs=1,
      precision=precision, export_dir='', verbose=0, log_every_steps=0,
      dashboard_every_epochs=0)
  trainer.run(config)
  plugin, ctx = _graphs_plugin(config.logdir), context.RequestContext()
  info = plugin.info_impl(ctx, '')
  # The tab opens a run's first graph as an op graph: a tag with only a
  # conceptual graph (Keras' write_graph) showed "Malformed GraphDef".
  assert info['g/train']['run_graph']
  assert all(tag['op_graph'] for run in info.values()
             for tag in run['tags'].values())
  body, _ = plugin.graph_impl(ctx, 'g/train', None, False, '')
  graph = text_format.Parse(body, graph_pb2.GraphDef())
  assert {'Conv2D', 'Relu', 'Sigmoid'} <= {node.op for node in graph.node}
  casts = {node.attr['DstT'].type for node in graph.node
           if node.op == 'Cast'}
  assert (types_pb2.DT_BFLOAT16 in casts) == (precision == 'mixed_bfloat16')


# --- Errors. ---


def test_unwritable_logdir_is_one_line_exit_2(tmp_path, make_records,
                                              run_module):
  records_dir = make_records(num_train=16, num_val=8,
                             image_hw=(SIZE, SIZE)).records_dir
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  result = run_module(
      'posternet.train', f'--records={records_dir}',
      f'--logdir={blocker}/runs', '--model=small_cnn', f'--image_size={SIZE}',
      '--epochs=1')
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  errors = [line for line in result.stderr.splitlines()
            if line.startswith('error:')]
  assert len(errors) == 1 and str(blocker) in errors[0]
