r"""Samples K images of every class (or of given conditions) from a run.

  python -m experiments.sample --workdir=DIR --num_per_class=K --out=FILE.npz \
      [--png=FILE.png] [--seed=0] [--step=N] \
      [--cond=7 | --cond=digit=7,color=red ... | --cond_file=C.npz] \
      [--guidance_scale=W --sampler=NAME --nfe=N]   # diffusion runs
      [--guidance_interval=LO,HI] [--guide_workdir=DIR[:STEP]]

--cond (repeatable) asks for K samples of each condition given, one grid row
each: a class name or index for a label-conditional run, every attribute as
NAME=VALUE for a run conditioned on attributes; --cond_file reads the array
`cond` (int, [N] or [N, A]) of an .npz file and draws one sample per row.

FILE.npz (written at exactly that path; missing folders are created, as for
--png) holds `images` (float32 in [0, 1], (N, H, W, C)) and `labels`
(int32; [N, A] for attributes), K per class in class order (or per --cond,
in the order given; one per row of --cond_file); the output depends only on the
checkpoint (the newest that restores, or --step's), the seed and the
sampling options. The sampling options override the run's config for the
diffusion family (`guidance_scale` w of (1 + w) pred(x, c) - w pred(x, null),
w = 0 the plain conditional model; `sampler` ddpm | ddim | euler | heun |
dpmpp_2m | unipc | edm_heun | edm_churn; `nfe` network evaluations;
`guidance_interval` LO,HI: guidance only where LO < sigma~ <= HI, sigma~ =
sigma_t / alpha_t, Kynkaanniemi et al. 2024). --guide_workdir=DIR[:STEP]
samples with autoguidance (Karras et al. 2024): (1 + w) pred(x, c) -
w guide(x, c), the guide a weaker diffusion run of the same objective,
schedule, dataset and classes (e.g. an early checkpoint of the same run).
On an InfoGAN run the classes are the categorical codes, and
`--traverse_code=I` writes instead its latent traversal: `images` with one
row per categorical code and --num_per_class columns of continuous code I
from -2 to 2 (the other codes 0, the noise fixed within a row), `labels`
and the code's `values`.

A run conditioned on images (`condition_kind='image'`) samples from
condition images: without --cond_file, one output for each of the first K
test images of every class, from its condition; FILE.npz then also holds
their `conditions` and `targets`, and the grid has one row per class of
input | output | target triplets. --cond_file reads the array `cond`
(float in [0, 1], [N, *condition shape], e.g. [N, 28, 28, 1] for MNIST
quadrants: the image with the quadrants to predict at 0) and draws one
output per condition; FILE.npz holds `images` and `conditions`, the grid
one input | output pair per row.
"""

import io
import zipfile

from absl import app
from absl import flags
from etils import epath
import numpy as np

from condgen_jax.core import runtime
from experiments import sampling_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained run directory.")
_NUM = flags.DEFINE_integer("num_per_class", 10, "Samples per class.")
_OUT = flags.DEFINE_string("out", None, "Output .npz file.")
_PNG = flags.DEFINE_string("png", None, "Optional grid PNG (a row per class).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_STEP = flags.DEFINE_integer("step", None, "The checkpoint of this step "
                             "instead of the newest.")
_TRAVERSE = flags.DEFINE_integer(
    "traverse_code", None, "InfoGAN runs: the continuous code to traverse "
    "from -2 to 2 (one row per categorical code).")
_COND = flags.DEFINE_multi_string(
    "cond", None, "A condition to sample: a class, or NAME=VALUE for every "
    "attribute (e.g. digit=7,color=red); repeat for several rows.")
_COND_FILE = flags.DEFINE_string(
    "cond_file", None, ".npz file whose array `cond` gives one condition "
    "per sample: int [N] or [N, A]; for a run conditioned on images, float "
    "condition images [N, H, W, C] in [0, 1].")
flags.mark_flags_as_required(["workdir", "out"])


def _read_cond_file() -> np.ndarray:
  """The array `cond` of --cond_file (an .npz file)."""
  path = epath.Path(_COND_FILE.value)
  wanted = ("give an .npz file holding an array 'cond' (np.savez(FILE, "
            "cond=...))")
  if not path.is_file():
    raise FileNotFoundError(f"--cond_file={path} does not exist or is not a "
                            f"file; {wanted}.")
  try:
    f = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile):
    f = None  # numpy reads a text file as pickled data, which it refuses
  if not isinstance(f, np.lib.npyio.NpzFile):
    raise ValueError(f"--cond_file={path} is not an .npz file; {wanted}.")
  with f:
    if "cond" not in f:
      raise ValueError(f"--cond_file={path} has no array 'cond'; it holds "
                       f"{sorted(f.files)}.")
    try:
      return np.asarray(f["cond"])
    except ValueError as e:  # an object array: pickled
      raise ValueError(f"--cond_file={path}: 'cond' is not a numeric array "
                       f"({e}).") from None


def _conditions(ds):
  """(labels, grid rows) of --cond / --cond_file, or None for neither."""
  from condgen_jax.evaluation import sampling  # pylint: disable=g-import-not-at-top
  if _COND.value and _COND_FILE.value:
    raise ValueError("give --cond or --cond_file, not both.")
  if _COND.value:
    rows = np.stack([sampling.parse_condition(ds, c) for c in _COND.value])
    return np.repeat(rows, _NUM.value, axis=0), len(rows)
  if _COND_FILE.value:
    cond = _read_cond_file()
    if not np.issubdtype(cond.dtype, np.integer):
      raise ValueError(f"--cond_file's 'cond' must be integers; got "
                       f"{cond.dtype}.")
    return cond.astype(np.int32), 1
  return None


def _label_samples(run, state):
  """(arrays to save, grid images, grid rows) of a label or attribute run."""
  from condgen_jax.data import images  # pylint: disable=g-import-not-at-top
  from condgen_jax.evaluation import sampling  # pylint: disable=g-import-not-at-top
  asked = _conditions(run.dataset)
  rows = images.grid_rows(run.dataset.num_classes)
  if asked is not None:
    if _TRAVERSE.value is not None:
      raise ValueError("--traverse_code does not take --cond/--cond_file.")
    y, rows = asked
    x = sampling.sample_labels(run, state, y, _SEED.value)
    return {"images": x, "labels": y}, x, rows
  if _TRAVERSE.value is None:
    x, y = sampling.sample_per_class(run, state, _NUM.value, _SEED.value)
    return {"images": x, "labels": y}, x, rows
  x, y, values = sampling.latent_traversal(run, state, _TRAVERSE.value,
                                           _NUM.value, _SEED.value)
  return {"images": x, "labels": y, "values": values}, x, rows


def _image_samples(run, state):
  """(arrays to save, grid images, grid rows) of a run conditioned on
  images: rows of input | output (| target) pictures."""
  from condgen_jax.data import images  # pylint: disable=g-import-not-at-top
  from condgen_jax.evaluation import sampling  # pylint: disable=g-import-not-at-top
  if _COND.value or _TRAVERSE.value is not None:
    given = (f"--cond={_COND.value[0]}" if _COND.value else
             f"--traverse_code={_TRAVERSE.value}")
    raise ValueError(f"a run conditioned on images takes its conditions "
                     f"from --cond_file (an array 'cond' of condition images "
                     f"in [0, 1]), not {given}.")
  spec = sampling.image_condition(run)
  shape = run.dataset.image_shape
  if _COND_FILE.value:
    cond = _read_cond_file()
    x = sampling.sample_conditions(run, state, cond, _SEED.value)
    return ({"images": x, "conditions": cond},
            images.side_by_side(spec.show(cond, shape), x), len(cond))
  targets, labels = sampling.test_targets(run.dataset, _NUM.value)
  x, _ = sampling.sample_per_class(run, state, _NUM.value, _SEED.value)
  cond = np.asarray(spec.from_images(targets))
  k = run.dataset.num_classes
  rows = k if len(labels) == k * _NUM.value else len(labels)
  return ({"images": x, "labels": labels, "conditions": cond,
           "targets": targets},
          images.side_by_side(spec.show(cond, shape), x, targets), rows)


def main(argv):
  runtime.start(argv)
  from condgen_jax.data import images  # pylint: disable=g-import-not-at-top
  from condgen_jax.evaluation import sampling  # pylint: disable=g-import-not-at-top
  from condgen_jax import api  # pylint: disable=g-import-not-at-top
  with runtime.user_errors():
    if _NUM.value <= 0:
      raise ValueError(f"--num_per_class must be positive; got {_NUM.value}.")
    out = sampling.output_path(_OUT.value)
    png = sampling.output_path(_PNG.value) if _PNG.value else None
    run = api.load(_WORKDIR.value, step=_STEP.value).with_options(
        **sampling_flags.values())
    run = sampling_flags.with_guide(run)
    state, step = run.state, run.step
    if sampling.image_condition(run) is not None:
      arrays, grid, rows = _image_samples(run, state)
    else:
      arrays, grid, rows = _label_samples(run, state)
    sampling.save_npz(out, **arrays)
    if png is not None:
      images.save_grid(grid, png, rows)
  print(f"wrote {len(arrays['images'])} samples of step {step} to {out}"
        + (f" and the grid to {png}" if png is not None else ""))


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
