r"""Samples K images of every class from a trained run.

  python -m experiments.sample --workdir=DIR --num_per_class=K --out=FILE.npz \
      [--png=FILE.png] [--seed=0] \
      [--guidance_scale=W --sampler=NAME --nfe=N]   # diffusion runs

FILE.npz (written at exactly that path; missing folders are created, as for
--png) holds `images` (float32 in [0, 1], (N, H, W, C)) and `labels`
(int32), K per class in class order; the output depends only on the
checkpoint, the seed and the sampling options. The sampling options
override the run's config for the diffusion family (`guidance_scale` w of
(1 + w) pred(x, c) - w pred(x, null), w = 0 the plain conditional model;
`sampler` ddpm | ddim | euler | heun; `nfe` network evaluations).
On an InfoGAN run the classes are the categorical codes, and
`--traverse_code=I` writes instead its latent traversal: `images` with one
row per categorical code and --num_per_class columns of continuous code I
from -2 to 2 (the other codes 0, the noise fixed within a row), `labels`
and the code's `values`.
"""

from absl import app
from absl import flags

from condgen_jax import runtime
from experiments import sampling_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained run directory.")
_NUM = flags.DEFINE_integer("num_per_class", 10, "Samples per class.")
_OUT = flags.DEFINE_string("out", None, "Output .npz file.")
_PNG = flags.DEFINE_string("png", None, "Optional grid PNG (a row per class).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_TRAVERSE = flags.DEFINE_integer(
    "traverse_code", None, "InfoGAN runs: the continuous code to traverse "
    "from -2 to 2 (one row per categorical code).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  runtime.start(argv)
  from condgen_jax import images, sampling, train  # pylint: disable=g-import-not-at-top
  with runtime.user_errors():
    if _NUM.value <= 0:
      raise ValueError(f"--num_per_class must be positive; got {_NUM.value}.")
    out = sampling.output_path(_OUT.value)
    png = sampling.output_path(_PNG.value) if _PNG.value else None
    run, state, step = train.restore_run(_WORKDIR.value)
    run = sampling.with_sampling_options(run, **sampling_flags.values())
    if _TRAVERSE.value is None:
      x, y = sampling.sample_per_class(run, state, _NUM.value, _SEED.value)
      sampling.save_npz(out, images=x, labels=y)
    else:
      x, y, values = sampling.latent_traversal(run, state, _TRAVERSE.value,
                                               _NUM.value, _SEED.value)
      sampling.save_npz(out, images=x, labels=y, values=values)
    if png is not None:
      images.save_grid(x, png, run.dataset.num_classes)
  print(f"wrote {len(y)} samples of step {step} to {out}"
        + (f" and the grid to {png}" if png is not None else ""))


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
