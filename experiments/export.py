r"""Exports a trained run's sampler with `jax.export`, for jax-only users and
other platforms.

  python -m experiments.export --workdir=DIR --out=F \
      [--platforms=cpu,cuda,tpu] [--num=N] [--step=S] \
      [--guidance_scale=W --sampler=NAME --nfe=N]   # diffusion runs

F holds the serialized `jax.export.Exported` of
`sample(conditions, key_data) -> images` (float32 [N, H, W, C] in [0, 1]):
`conditions` int32 labels [N] (attribute rows [N, A]; float32 condition
images for a run conditioned on images), `key_data` the uint32
`jax.random.key_data` of a key. The weights and the sampling options (the
run's, or those given) are fixed inside; the batch N is symbolic unless
--num fixes it. F.json describes the inputs, outputs, class names,
platforms and settings. Run it with jax alone:

  exp = jax.export.deserialize(open(F, "rb").read())
  images = exp.call(labels, jax.random.key_data(jax.random.key(0)))

Library: `condgen_jax.tools.export.write_export`.
"""

from absl import app
from absl import flags

from condgen_jax.core import runtime
from experiments import sampling_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained run directory.")
_OUT = flags.DEFINE_string("out", None, "Output file (F, plus F.json).")
_PLATFORMS = flags.DEFINE_string(
    "platforms", "cpu", "Comma-separated platforms to lower for: cpu, "
    "cuda, rocm, tpu.")
_NUM = flags.DEFINE_integer("num", None, "A fixed batch size (default: "
                            "symbolic, any batch).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the "
                             "newest).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  runtime.start(argv)
  from condgen_jax.tools import export  # pylint: disable=g-import-not-at-top
  with runtime.user_errors():
    info = export.write_export(
        _WORKDIR.value, _OUT.value, platforms=_PLATFORMS.value,
        num=_NUM.value, step=_STEP.value, **sampling_flags.values())
  print(f"wrote the sampler of step {info['step']} for "
        f"{','.join(info['platforms'])} to {_OUT.value} (+ .json)")


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
