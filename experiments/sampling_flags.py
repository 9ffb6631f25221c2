"""The sampling flags shared by `experiments.sample` and `evaluate`: they
override a run's sampling-only config keys (the diffusion family's)."""

from absl import flags

_GUIDANCE = flags.DEFINE_float("guidance_scale", None, "Diffusion: "
                               "classifier-free guidance w (default: the "
                               "run's config).")
_SAMPLER = flags.DEFINE_string("sampler", None, "Diffusion: ddpm | ddim | "
                               "euler | heun | dpmpp_2m | unipc | edm_heun | "
                               "edm_churn (default: the run's config).")
_NFE = flags.DEFINE_integer("nfe", None, "Diffusion: network evaluations "
                            "per sample (default: the run's config).")


def values() -> dict:
  """{key: value} of the flags given (None: keep the run's config)."""
  return {"guidance_scale": _GUIDANCE.value, "sampler": _SAMPLER.value,
          "nfe": _NFE.value}
