"""Tests of posternet/model/optim.py: schedule values, optimizers, losses, checks."""

import keras
import numpy as np
import pytest

from posternet.model import optim
def _rate_at(schedule, step):
  return float(keras.ops.convert_to_numpy(schedule(step)))


def test_constant_is_the_tutorials_rate():
  assert optim.learning_rate(optim.Recipe(learning_rate=1e-3), 100, 10) == 1e-3


def test_warmup_then_cosine_at_chosen_steps():
  recipe = optim.Recipe(learning_rate=0.01, schedule='cosine',
                        warmup_epochs=2)
  schedule = optim.learning_rate(recipe, steps_per_epoch=50, epochs=12)
  # Warm-up: linear from 0 over 2 epochs (100 steps).
  assert _rate_at(schedule, 0) == pytest.approx(0.0, abs=1e-9)
  assert _rate_at(schedule, 50) == pytest.approx(0.005, rel=1e-4)
  assert _rate_at(schedule, 100) == pytest.approx(0.01, rel=1e-4)
  # Cosine over the remaining 500 steps, to 1 % of the peak.
  floor = optim.COSINE_FLOOR * 0.01
  middle = floor + (0.01 - floor) * 0.5
  assert _rate_at(schedule, 350) == pytest.approx(middle, rel=1e-3)
  assert _rate_at(schedule, 600) == pytest.approx(floor, rel=1e-3)
  rates = [_rate_at(schedule, step) for step in range(100, 601, 25)]
  assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_cosine_without_warmup_starts_at_the_peak():
  schedule = optim.learning_rate(
      optim.Recipe(learning_rate=0.02, schedule='cosine'), 10, 3)
  assert _rate_at(schedule, 0) == pytest.approx(0.02, rel=1e-5)


def test_optimizers_and_losses():
  adamw = optim.make_optimizer(
      optim.Recipe(optimizer='adamw', weight_decay=0.05), 10, 2)
  assert isinstance(adamw, keras.optimizers.AdamW)
  assert adamw.weight_decay == pytest.approx(0.05)
  assert isinstance(optim.make_optimizer(optim.Recipe(), 10, 2),
                    keras.optimizers.Adam)
  labels = np.array([[1.0, 0.0, 0.0, 0.0]])
  probabilities = np.array([[0.9, 0.1, 0.2, 0.05]])
  bce = float(optim.make_loss(optim.Recipe())(labels, probabilities))
  focal = float(optim.make_loss(optim.Recipe(loss='focal'))(labels,
                                                            probabilities))
  # Focal weighs these easy, right answers down.
  assert 0 < focal < bce
  smoothed = float(optim.make_loss(optim.Recipe(label_smoothing=0.2))(
      labels, probabilities))
  assert smoothed > bce  # confident answers cost more against soft targets


@pytest.mark.parametrize('recipe, flag', [
    (optim.Recipe(learning_rate=0), 'learning_rate'),
    (optim.Recipe(optimizer='sgd'), 'optimizer'),
    (optim.Recipe(schedule='step'), 'schedule'),
    (optim.Recipe(loss='hinge'), 'loss'),
    (optim.Recipe(weight_decay=0.1), 'weight_decay'),  # Adam has none
    (optim.Recipe(label_smoothing=1.0), 'label_smoothing'),
    (optim.Recipe(schedule='cosine', warmup_epochs=-1), 'warmup_epochs'),
])
def test_bad_recipes_name_their_flag(recipe, flag):
  assert [name for name, _ in optim.check(recipe)] == [flag]
  assert optim.check(optim.Recipe(optimizer='adamw', weight_decay=0.1)) == []
