"""Optimisation: the optimizer, its learning-rate schedule and the loss.

The tutorial trains with Adam at a constant 1e-3 and binary cross-entropy;
those stay the defaults, so configs/seed.cfg is the tutorial's run. A model
trained from scratch on ~6,000 posters does better with what people expect
of a modern recipe (configs/real.cfg; BUILD_NOTES.md, "Real posters"):
  - warm-up then cosine decay: large steps early on break batch norm's
    statistics; small steps at the end settle into a minimum;
  - AdamW: weight decay decoupled from the adaptive step, the regulariser
    a small data set needs;
  - losses for 25 genres from 50 % (Drama) down to 0.03 %: label smoothing,
    or focal loss, which weighs the many easy negatives down.
"""

import dataclasses

import keras

from posternet import settings

OPTIMIZERS = ('adam', 'adamw')
SCHEDULES = ('constant', 'cosine')
LOSSES = ('bce', 'focal')


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How the weights are fitted: the trainer's flags of the same names."""
  learning_rate: float = settings.setting(
      1e-3, 'Peak learning rate (the constant one with --schedule=constant).')
  optimizer: str = settings.setting(
      'adam', 'adam (the tutorial\'s) or adamw (decoupled --weight_decay).',
      choices=OPTIMIZERS)
  weight_decay: float = settings.setting(
      0.0, 'AdamW\'s decoupled weight decay (needs --optimizer=adamw).',
      minimum=0)
  schedule: str = settings.setting(
      'constant', 'Learning rate over the run: constant (the tutorial\'s), '
      'or cosine: linear warm-up for --warmup_epochs, then cosine decay to '
      '1% of --learning_rate.', choices=SCHEDULES)
  warmup_epochs: float = settings.setting(
      0.0, 'Epochs of linear learning-rate warm-up from 0 '
      '(--schedule=cosine).', minimum=0)
  loss: str = settings.setting(
      'bce', 'bce: binary cross-entropy (the tutorial\'s); focal: binary '
      'focal cross-entropy (gamma 2), which weighs easy negatives down.',
      choices=LOSSES)
  label_smoothing: float = settings.setting(
      0.0, 'Pulls the 0/1 targets towards 0.5 by this much.')


# Focal loss' focusing exponent: the paper's (Lin et al. 2017), not a flag.
FOCAL_GAMMA = 2.0

# The cosine schedule ends at this share of the peak rate, not at 0: the
# last epochs still learn a little.
COSINE_FLOOR = 0.01


def learning_rate(recipe: Recipe, steps_per_epoch: int, epochs: int):
  """The learning rate: a float, or a schedule of the optimizer's step.

  Warm-up and decay are counted in steps from the whole run's length, so a
  resumed run continues on the same curve (the step count is saved with the
  optimizer).
  """
  if recipe.schedule == 'constant':
    return recipe.learning_rate
  total = max(steps_per_epoch * epochs, 1)
  warmup = min(int(round(recipe.warmup_epochs * steps_per_epoch)), total - 1)
  return keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=0.0 if warmup else recipe.learning_rate,
      decay_steps=total - warmup, alpha=COSINE_FLOOR,
      warmup_target=recipe.learning_rate if warmup else None,
      warmup_steps=warmup)


def make_optimizer(recipe: Recipe, steps_per_epoch: int,
                   epochs: int) -> keras.optimizers.Optimizer:
  """The optimizer the recipe names, with its learning rate (schedule)."""
  rate = learning_rate(recipe, steps_per_epoch, epochs)
  if recipe.optimizer == 'adamw':
    return keras.optimizers.AdamW(rate, weight_decay=recipe.weight_decay)
  return keras.optimizers.Adam(rate)


def make_loss(recipe: Recipe) -> keras.losses.Loss:
  """The loss the recipe names; both take probabilities (sigmoid outputs)."""
  if recipe.loss == 'focal':
    return keras.losses.BinaryFocalCrossentropy(
        gamma=FOCAL_GAMMA, label_smoothing=recipe.label_smoothing)
  return keras.losses.BinaryCrossentropy(
      label_smoothing=recipe.label_smoothing)


def check(recipe: Recipe) -> list:
  """What is wrong with the recipe: (flag, one-line error) pairs, [] if none."""
  problems = settings.check(recipe)

  def bad(name, problem):
    problems.append((name, f'--{name}={getattr(recipe, name)}: {problem}'))
  if not recipe.learning_rate > 0:
    bad('learning_rate', 'must be positive')
  if recipe.weight_decay and recipe.optimizer != 'adamw':
    bad('weight_decay', 'needs --optimizer=adamw')
  if not 0 <= recipe.label_smoothing < 1:
    bad('label_smoothing', 'must be in [0, 1)')
  return problems
