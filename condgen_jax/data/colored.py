"""Colored MNIST: each digit drawn in one of six colors, on black.

An example of `colored_mnist` (`colored_digits`) is an MNIST (`digits`)
image whose gray level g in [0, 1] scales one palette color: pixel =
round(g * rgb). It has two attributes, `digit` (the label) and `color`.
Colors are drawn per example by numpy from a seeded generator, separately
for each split, so the construction is a pure function of the source data,
the seed and the held-out combinations:

- test: every (digit, color) combination, color uniform over the palette;
- train: color uniform over the colors whose combination with the digit is
  not held out, so no held-out combination ever appears in training and
  every training image is used.

The default holds out 10 of the 60 combinations, one per digit, every color
at least once: digit d in palette color (d - 1) mod 6 (a cyan 0, a red 1,
a green 2, ..., a red 7, ..., a blue 9).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# name -> RGB; primaries and secondaries, far apart for the color classifier.
PALETTE = (("red", (255, 0, 0)), ("green", (0, 255, 0)),
           ("blue", (0, 0, 255)), ("yellow", (255, 255, 0)),
           ("magenta", (255, 0, 255)), ("cyan", (0, 255, 255)))
COLOR_NAMES = tuple(name for name, _ in PALETTE)
NUM_COLORS = len(PALETTE)
NUM_DIGITS = 10
DEFAULT_HELD_OUT = tuple((d, (d - 1) % NUM_COLORS)
                         for d in range(NUM_DIGITS))
SPLITS = ("train", "test")


def parse_combinations(text: str) -> tuple[tuple[int, int], ...]:
  """'7:red,3:blue' -> ((7, 0), (3, 2)); 'default' -> DEFAULT_HELD_OUT;
  '' -> (). ValueError naming the first bad entry."""
  text = text.strip()
  if text == "default":
    return DEFAULT_HELD_OUT
  combos = []
  for entry in filter(None, (e.strip() for e in text.split(","))):
    digit, sep, color = entry.partition(":")
    if not sep or not digit.strip().isdigit() or int(digit) >= NUM_DIGITS or (
        color.strip() not in COLOR_NAMES):
      raise ValueError(
          f"held-out combination {entry!r} is not DIGIT:COLOR with DIGIT in "
          f"0..{NUM_DIGITS - 1} and COLOR one of {COLOR_NAMES}.")
    combos.append((int(digit), COLOR_NAMES.index(color.strip())))
  return tuple(combos)


def format_combinations(combos) -> str:
  return ",".join(f"{d}:{COLOR_NAMES[c]}" for d, c in combos)


def allowed_colors(held_out) -> list[list[int]]:
  """Per digit, the colors it may take in training."""
  held = set(map(tuple, held_out))
  allowed = [[c for c in range(NUM_COLORS) if (d, c) not in held]
             for d in range(NUM_DIGITS)]
  for d, colors in enumerate(allowed):
    if not colors:
      raise ValueError(f"held-out combinations leave digit {d} no color to "
                       "train on.")
  return allowed


def draw_colors(digits: np.ndarray, split: str, seed: int,
                held_out) -> np.ndarray:
  """The color index of each example of `split` (int32)."""
  rng = np.random.default_rng([seed, SPLITS.index(split)])
  u = rng.random(len(digits))
  if split == "test":
    return np.minimum(u * NUM_COLORS, NUM_COLORS - 1).astype(np.int32)
  allowed = allowed_colors(held_out)
  counts = np.array([len(a) for a in allowed])
  table = np.array([a + [a[0]] * (NUM_COLORS - len(a)) for a in allowed])
  idx = np.minimum(u * counts[digits], counts[digits] - 1).astype(np.int64)
  return table[digits, idx].astype(np.int32)


def colorize(images: np.ndarray, colors: np.ndarray,
             max_value: float) -> np.ndarray:
  """(N, H, W, 1) gray in [0, max_value] -> (N, H, W, 3) uint8 in color."""
  # a table over the integer gray levels: no float copy of the images
  levels = np.arange(int(max_value) + 1, dtype=np.float64) / max_value
  rgb = np.array([c for _, c in PALETTE], np.float64)
  table = np.round(levels[:, None, None] * rgb[None]).astype(np.uint8)
  return table[images[..., 0], np.asarray(colors)[:, None, None]]


@dataclasses.dataclass(frozen=True)
class Attributes:
  """Per-example attributes of a dataset: names, their class names, and the
  (N, len(names)) int32 values of each split."""
  names: tuple[str, ...]
  class_names: tuple[tuple[str, ...], ...]
  train: np.ndarray
  test: np.ndarray
  held_out: tuple[tuple[int, ...], ...] = ()

  def split(self, name: str) -> np.ndarray:
    return {"train": self.train, "test": self.test}[name]


def colored(base, *, seed: int = 0, held_out=DEFAULT_HELD_OUT):
  """(images per split, Attributes) of the colored version of `base`, a
  gray `data.Dataset` of 10 digits."""
  images, values = {}, {}
  for split in SPLITS:
    gray, digits = base.split(split)
    colors = draw_colors(digits, split, seed, held_out)
    images[split] = colorize(gray, colors, base.max_value)
    values[split] = np.stack([digits, colors], axis=1).astype(np.int32)
  attributes = Attributes(("digit", "color"), (base.class_names, COLOR_NAMES),
                          values["train"], values["test"],
                          tuple(map(tuple, held_out)))
  return images, attributes
