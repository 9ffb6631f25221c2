"""The sampling flags shared by `experiments.sample` and `evaluate`: they
override a run's sampling-only config keys (the diffusion family's), and
--guide_workdir adds an autoguidance guide (`with_guide`)."""

import math

from absl import flags

_GUIDANCE = flags.DEFINE_float("guidance_scale", None, "Diffusion: "
                               "classifier-free guidance w (default: the "
                               "run's config).")
_INTERVAL = flags.DEFINE_string(
    "guidance_interval", None, "Diffusion: LO,HI guides only where LO < "
    "sigma~ <= HI (Kynkaanniemi et al. 2024; sigma~ = sigma_t / alpha_t, "
    "HI may be inf); empty: at every noise level (default: the run's "
    "config).")
_GUIDE = flags.DEFINE_string(
    "guide_workdir", None, "Diffusion: DIR[:STEP], a weaker diffusion run "
    "(same objective, schedule, dataset, classes) as the guide of "
    "autoguidance (Karras et al. 2024): (1 + w) main(x, c) - w guide(x, c) "
    "instead of the null condition; STEP picks its checkpoint (default: "
    "the newest).")
_SAMPLER = flags.DEFINE_string("sampler", None, "Diffusion: ddpm | ddim | "
                               "euler | heun | dpmpp_2m | unipc | edm_heun | "
                               "edm_churn (default: the run's config).")
_NFE = flags.DEFINE_integer("nfe", None, "Diffusion: network evaluations "
                            "per sample (default: the run's config).")


def parse_interval(text: str | None):
  """(lo, hi) floats of LO,HI ('inf' allowed), () of an empty string, None
  of None; ValueError names the text and the form expected."""
  if text is None:
    return None
  if not text.strip():
    return ()
  parts = text.split(",")
  try:
    lo, hi = (float(p) for p in parts)
  except ValueError:
    lo = hi = math.nan
  if len(parts) != 2 or math.isnan(lo) or math.isnan(hi):
    raise ValueError(f"--guidance_interval must be LO,HI (two numbers, HI "
                     f"may be inf) or empty for every noise level; got "
                     f"{text!r}.")
  if not 0 <= lo < hi or math.isinf(lo):
    raise ValueError(f"--guidance_interval={text} must have 0 <= LO < HI "
                     f"(HI may be inf); got LO={lo}, HI={hi}.")
  return (lo, hi)


def parse_guide(text: str):
  """(workdir, step or None) of DIR[:STEP] (a tail of digits after the last
  ':' is the step, so gs://... paths stay whole)."""
  head, sep, tail = text.rpartition(":")
  if sep and head and tail.isdigit():
    return head, int(tail)
  return text, None


def values() -> dict:
  """{key: value} of the flags given (None: keep the run's config)."""
  return {"guidance_scale": _GUIDANCE.value, "sampler": _SAMPLER.value,
          "nfe": _NFE.value,
          "guidance_interval": parse_interval(_INTERVAL.value)}


def guide_workdir() -> str | None:
  """--guide_workdir as given (None without it)."""
  return _GUIDE.value


def with_guide(run):
  """`run` (an `api.Trained`) with the guide of --guide_workdir
  (`Trained.with_guide`), or `run` without the flag. The guide's settings
  are checked against the run's before its checkpoint is restored."""
  if not _GUIDE.value:
    return run
  from condgen_jax import api  # pylint: disable=g-import-not-at-top
  from condgen_jax.diffusion import autoguidance  # pylint: disable=g-import-not-at-top
  workdir, step = parse_guide(_GUIDE.value)
  autoguidance.check_guide(run.settings, api.read_settings(workdir))
  return run.with_guide(api.load(workdir, step=step, dataset=run.dataset))
