"""Sample grids as PNG: one row per class (or first attribute's value; for
image conditions, the input | output | target triplets of a class's
test images)."""

from __future__ import annotations

import io

import numpy as np
from etils import epath
from PIL import Image


def make_grid(images, num_rows: int, padding: int = 1,
              pad_value: float = 1.0) -> np.ndarray:
  """[N, H, W, C] in [0, 1] -> one [rows*(H+p)+p, cols*(W+p)+p, C] image.

  Images fill the grid row by row, so `num_rows` classes with N/num_rows
  samples each, in class order, give one row per class.
  """
  images = np.asarray(images, np.float32)
  n, h, w, c = images.shape
  if n % num_rows:
    raise ValueError(f"{n} images do not fill {num_rows} rows evenly.")
  cols = n // num_rows
  grid = np.full((num_rows * (h + padding) + padding,
                  cols * (w + padding) + padding, c), pad_value, np.float32)
  for i in range(n):
    r, col = divmod(i, cols)
    top, left = padding + r * (h + padding), padding + col * (w + padding)
    grid[top:top + h, left:left + w] = images[i]
  return grid


def save_grid(images, path, num_rows: int, min_size: int = 280) -> None:
  """Writes `make_grid(images, num_rows)` to `path` as PNG, upscaled (nearest)
  so that small images such as 8x8 digits stay legible."""
  grid = make_grid(images, num_rows)
  array = (np.clip(grid, 0.0, 1.0) * 255).round().astype(np.uint8)
  if array.shape[-1] == 1:
    array = array[..., 0]
  image = Image.fromarray(array)
  scale = max(1, int(np.ceil(min_size / max(image.size))))
  if scale > 1:
    image = image.resize((image.size[0] * scale, image.size[1] * scale),
                         Image.NEAREST)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  tmp = path.parent / f".{path.name}.tmp"
  tmp.write_bytes(buffer.getvalue())
  tmp.replace(path)


def class_rows(num_classes, per_class: int) -> np.ndarray:
  """Labels 0,0,..,1,1,.. (`per_class` each, class order) as int32; with a
  tuple of attribute sizes, every combination `[A]` in row-major order (the
  first attribute slowest), `per_class` each: `[N, A]`."""
  if isinstance(num_classes, tuple):
    axes = np.meshgrid(*[np.arange(n) for n in num_classes], indexing="ij")
    combos = np.stack(axes, -1).reshape(-1, len(num_classes))
    return np.repeat(combos, per_class, axis=0).astype(np.int32)
  return np.repeat(np.arange(num_classes, dtype=np.int32), per_class)


def grid_rows(num_classes) -> int:
  """Rows of a `class_rows` grid: the classes, or the first attribute's
  values (each row then holds the other attributes' combinations)."""
  return num_classes[0] if isinstance(num_classes, tuple) else num_classes


def per_combination(num_classes, per_class: int) -> int:
  """Samples per combination that keep a grid row near `per_class` wide."""
  if not isinstance(num_classes, tuple):
    return per_class
  return max(1, per_class // int(np.prod(num_classes[1:])))


def side_by_side(*columns) -> np.ndarray:
  """Example i of every column array `[N, H, W, C]`, one after the other
  (input_0, output_0, target_0, input_1, ...): `[N * len(columns), H, W,
  C]`, so that grid rows hold whole input | output | target groups."""
  return np.stack([np.asarray(c, np.float32) for c in columns],
                  axis=1).reshape((-1,) + np.shape(columns[0])[1:])
