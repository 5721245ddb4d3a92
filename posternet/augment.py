"""Augmentation of training batches: the input pipeline's 'augment' stage.

Empty for now: augment_batch returns its batch as it is. The transforms of
the real-poster work go here, as small named ops (after big_vision's
pp/ops_image.py and FFCV's pipelines after the cache):

  - on uint8 batches [B, H, W, 3] at the model's image size, with their
    float32 labels [B, 25] (a transform that mixes posters mixes labels);
  - after decode, and after the cache when caching, so a cached epoch still
    gets fresh transforms; before prefetch;
  - train split only: validation and prediction see the posters as stored;
  - seeded: random draws come from (seed, step) through stateless random
    ops, so a seeded run repeats exactly and every batch draws anew;
  - written for tf.data (graph mode), and tested both eagerly and inside a
    tf.data map.

input_pipeline.make_dataset runs the stage when Options.augment holds a
Policy and the pass is a training one; the trainer does not set it yet.
"""

import dataclasses
from typing import Optional, Tuple

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Policy:
  """Which augmentations run, with their settings; none exist yet."""


def augment_batch(images: tf.Tensor, labels: tf.Tensor, policy: Policy, *,
                  seed: Optional[int], step: tf.Tensor
                  ) -> Tuple[tf.Tensor, tf.Tensor]:
  """One training batch, augmented as the policy says (for now: unchanged).

  Args:
    images: uint8 [B, H, W, 3].
    labels: float32 [B, 25].
    policy: the augmentations to apply.
    seed: the pipeline's seed (Options.seed); None: unseeded.
    step: int64 scalar, the batch's index in the stream: with the seed it
      makes each batch's random draws.

  Returns:
    (images, labels) of the same shapes and dtypes.
  """
  del policy, seed, step  # no augmentation yet
  return images, labels
