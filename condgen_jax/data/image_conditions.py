"""Image conditions: a condition image derived from each target image.

A run with `condition_kind='image'` is conditioned on an image instead of a
label: structured output prediction (Sohn et al. 2015) and image-to-image
translation (Isola et al. 2017). The condition is a pure function of the
target image, so the runner's data path (images and labels on the device)
does not change: the family derives the condition in its train step, and
sampling and evaluation derive it from test images.

- 'quadrants' (Sohn et al. 2015, Sec. 5.1, MNIST quadrant prediction): the
  image with the quadrants to predict set to 0. `quadrants_given` = 1 keeps
  the bottom-left quadrant, 2 the left half, 3 all but the bottom-right (a
  fixed rule, the one of Pyro's reproduction of the experiment). Quadrants
  split H and W at H // 2 and W // 2.
- 'colorize': the gray image of a color target, per pixel its largest
  channel (on colored_* datasets, round(g * 255) / 255 of the digit's gray
  level g); every pixel is to predict.

`ImageCondition` computes the condition, its shape, the masks of the given
pixels and of the pixels to predict, and the picture of a condition shown
in sample grids (input | output | target).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from condgen_jax.data import datasets as data_lib
from condgen_jax.core import options

TASKS = ("quadrants", "colorize")
# (top-left, top-right, bottom-left, bottom-right): 1 where given.
GIVEN_QUADRANTS = {1: (0, 0, 1, 0), 2: (1, 0, 1, 0), 3: (1, 1, 1, 0)}
# The shade of the pixels to predict in a grid's input column.
MISSING_SHADE = 0.5

OPTIONS = {
    "image_task": options.choice(
        "quadrants", TASKS,
        "condition_kind='image': the condition derived from each target, "
        "its given quadrants (Sohn et al. 2015) or its gray image "
        "('colorize', colored_* datasets)"),
    "quadrants_given": options.choice(
        1, tuple(GIVEN_QUADRANTS),
        "image_task='quadrants': 1 = bottom-left, 2 = left half, 3 = all "
        "but the bottom-right"),
}


@dataclasses.dataclass(frozen=True)
class ImageCondition:
  """How a condition image is derived from a target image (see the module
  docstring). Images are float in [0, 1], `[N, H, W, C]`."""
  task: str = "quadrants"
  quadrants_given: int = 1

  def shape(self, image_shape) -> tuple[int, int, int]:
    """The shape of one condition for targets of `image_shape`."""
    h, w, c = image_shape
    return (h, w, 1) if self.task == "colorize" else (h, w, c)

  def given_mask(self, image_shape) -> np.ndarray:
    """float32 `[H, W, 1]`: 1 on the pixels the condition gives."""
    h, w, _ = image_shape
    mask = np.zeros((h, w, 1), np.float32)
    if self.task == "quadrants":
      rows = (slice(0, h // 2), slice(h // 2, h))  # top, bottom
      cols = (slice(0, w // 2), slice(w // 2, w))  # left, right
      quadrants = [(r, c) for r in rows for c in cols]
      for given, (r, c) in zip(GIVEN_QUADRANTS[self.quadrants_given],
                               quadrants):
        mask[r, c] = given
    return mask

  def target_mask(self, image_shape) -> np.ndarray:
    """float32 `[H, W, 1]`: 1 on the pixels to predict."""
    return 1.0 - self.given_mask(image_shape)

  def from_images(self, images):
    """The conditions of target `images` `[N, H, W, C]` (traceable)."""
    images = jnp.asarray(images, jnp.float32)
    if self.task == "colorize":
      return jnp.max(images, axis=-1, keepdims=True)
    return images * self.given_mask(images.shape[1:])

  def compose(self, conditions, predicted):
    """`predicted` on the pixels to predict, the condition elsewhere: an
    output that keeps what was given (traceable)."""
    image_shape = predicted.shape[1:]
    return (self.target_mask(image_shape) * predicted
            + self.given_mask(image_shape) * conditions)

  def show(self, conditions, image_shape) -> np.ndarray:
    """Conditions as pictures of `image_shape` for grids: the pixels to
    predict at `MISSING_SHADE`; a gray image repeated over the channels."""
    conditions = np.asarray(conditions, np.float32)
    if self.task == "colorize":
      return np.repeat(conditions, image_shape[-1], axis=-1)
    return conditions + MISSING_SHADE * self.target_mask(image_shape)

  def check(self, conditions, image_shape) -> np.ndarray:
    """`conditions` as float32 after checking their layout and range;
    ValueError naming what is expected."""
    conditions = np.asarray(conditions)
    expected = self.shape(image_shape)
    if (conditions.ndim != 4 or tuple(conditions.shape[1:]) != expected
        or not np.issubdtype(conditions.dtype, np.floating)):
      raise ValueError(f"conditions must be float images [N, "
                       f"{', '.join(map(str, expected))}] in [0, 1] (the "
                       f"{self.task} condition of this run); got dtype "
                       f"{conditions.dtype}, shape {conditions.shape}.")
    if not np.all(np.isfinite(conditions)):
      raise ValueError("conditions must hold values in [0, 1]; got "
                       "non-finite values.")
    if conditions.size and (conditions.min() < 0 or conditions.max() > 1):
      raise ValueError("conditions must hold values in [0, 1]; got values "
                       f"in [{conditions.min()}, {conditions.max()}].")
    return conditions.astype(np.float32)


def check(s) -> None:
  """ValueError when settings `s` ask to colorize a dataset without
  colors."""
  if s.image_task == "colorize" and s.dataset not in data_lib.COLORED_SOURCE:
    raise ValueError(f"image_task='colorize' needs a colored dataset "
                     f"{tuple(data_lib.COLORED_SOURCE)}; got dataset "
                     f"{s.dataset!r}.")


def from_settings(s) -> ImageCondition:
  """The `ImageCondition` settings `s` ask for (`image_task`,
  `quadrants_given`)."""
  return ImageCondition(s.image_task, s.quadrants_given)
