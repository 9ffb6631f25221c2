"""A trained run's sampler as a `jax.export` artifact, for users with jax
alone (no condgen_jax) and for other platforms (cuda, tpu).

  import condgen_jax as cg
  from condgen_jax.tools import export
  export.write_export("workdirs/cvae_digits", "cvae.jax",
                      platforms=("cpu", "cuda"))

writes `cvae.jax`, the serialized `jax.export.Exported` of

  sample(conditions, key_data) -> images float32 [N, H, W, C] in [0, 1]

with the checkpoint's weights, the sampler, NFE and guidance fixed inside,
and `cvae.jax.json` describing it (inputs, outputs, class names, platforms,
settings). `conditions` are int32 labels [N], attribute rows [N, A] for a
run conditioned on attributes, or float32 condition images [N, *shape] in
[0, 1] for one conditioned on images; `key_data` is
`jax.random.key_data(key)` of a key of the default implementation
(uint32, [2] for threefry2x32). A user runs it with

  exp = jax.export.deserialize(open("cvae.jax", "rb").read())
  images = exp.call(labels, jax.random.key_data(jax.random.key(0)))

N is symbolic (any batch) unless a fixed `num` is asked for. The images are
the family's sampler's for the same conditions and key
(`make_sample_fn(settings, ...)(state, conditions, key)`); the sampler
checks nothing at run time, so labels must lie in [0, num_classes).
`kernels='auto'` resolves for the export's platforms
(`nn.kernels.resolve_name`): stock flax layers unless every platform is CPU.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from condgen_jax.nn import kernels as kernels_lib

# The platforms `jax.export` lowers for ('cuda' and 'rocm' are GPUs).
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
BATCH = "N"  # the name of the symbolic batch dimension


def parse_platforms(platforms: str | Sequence[str]) -> tuple[str, ...]:
  """('cpu', 'cuda', ...) from 'cpu,cuda' or a sequence: each one of
  `PLATFORMS`, once. ValueError on an unknown, repeated or empty list."""
  if isinstance(platforms, str):
    platforms = platforms.split(",")
  names = tuple(p.strip().lower() for p in platforms if p.strip())
  if not names:
    raise ValueError(f"no platform given; expected some of {PLATFORMS}.")
  for name in names:
    if name not in PLATFORMS:
      raise ValueError(f"unknown platform {name!r}; expected some of "
                       f"{PLATFORMS}, comma-separated.")
  if len(set(names)) != len(names):
    raise ValueError(f"platforms {names} repeat a name.")
  return names


def check_num(num: int | None) -> None:
  """ValueError unless `num` (a fixed batch) is None or positive."""
  if num is not None and num <= 0:
    raise ValueError(f"--num must be positive; got {num}.")


def platform_settings(s, platforms: Sequence[str]
                      ) -> ml_collections.FrozenConfigDict:
  """Settings `s` with `kernels` resolved for `platforms`
  (`kernels.resolve_name`): a program lowered for an accelerator on a CPU
  host gets the stock layers, not the XLA:CPU ones. Settings without the
  key are returned as they are."""
  if "kernels" not in s:
    return s
  name = kernels_lib.resolve_name(s.kernels, tuple(platforms))
  if name == s.kernels:
    return s
  return ml_collections.FrozenConfigDict({**s.to_dict(), "kernels": name})


def _condition_spec(run, batch) -> tuple[jax.ShapeDtypeStruct, dict]:
  """The abstract conditions input and its description."""
  s, ds = run.settings, run.dataset
  if s.condition_kind == "image":
    shape = tuple(run.family.image_condition(s).shape(ds.image_shape))
    return (jax.ShapeDtypeStruct((batch, *shape), jnp.float32),
            {"kind": "image", "dtype": "float32", "range": [0.0, 1.0],
             "description": "condition images, NHWC, in [0, 1]"})
  if s.condition_kind == "attributes":
    a = len(ds.attribute_names)
    return (jax.ShapeDtypeStruct((batch, a), jnp.int32),
            {"kind": "attributes", "dtype": "int32",
             "description": "one row per sample, the index of each "
                            "attribute's value (attribute_names order)"})
  return (jax.ShapeDtypeStruct((batch,), jnp.int32),
          {"kind": "label", "dtype": "int32",
           "description": "class indices in [0, num_classes)"})


def _shape(shape) -> list:
  """A shape for JSON: ints, the symbolic batch as its name."""
  return [d if isinstance(d, int) else str(d) for d in shape]


def _jsonable(value):
  if isinstance(value, (tuple, list)):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, np.generic):
    return value.item()
  return value


def export_sampler(run, platforms: Sequence[str] = ("cpu",),
                   num: int | None = None) -> tuple[jax.export.Exported,
                                                    dict]:
  """(exported sampler, its description) of `run` (`api.Trained`, with its
  sampling options already set by `with_options`).

  The exported function is `sample(conditions, key_data) -> images` (module
  docstring), batch `num` or symbolic; the state's arrays are constants of
  the program. The description is what `write_export` writes as JSON."""
  platforms = parse_platforms(platforms)
  check_num(num)
  s = platform_settings(run.settings, platforms)
  ds = run.dataset
  sample = run.family.make_sample_fn(s, ds.image_shape, ds.num_classes)
  state = jax.device_get(run.state)  # host constants, whatever the mesh
  key = jax.random.key(0)
  impl = str(jax.random.key_impl(key))
  key_data = jax.random.key_data(key)

  def sampler(conditions, raw_key):
    rng = jax.random.wrap_key_data(raw_key, impl=impl)
    return sample(state, conditions, rng).astype(jnp.float32)

  batch = num if num is not None else jax.export.symbolic_shape(BATCH)[0]
  conditions, condition_info = _condition_spec(run, batch)
  exported = jax.export.export(jax.jit(sampler), platforms=platforms)(
      conditions, jax.ShapeDtypeStruct(key_data.shape, key_data.dtype))
  images = exported.out_avals[0]
  sampling_keys = [k for k in ("sampler", "nfe", "guidance_scale",
                               "guidance_interval", "clip_x0", "kernels",
                               "student_steps") if k in s]
  info = {
      "format": "jax.export serialized Exported (jax.export.deserialize)",
      "calling_convention_version": exported.calling_convention_version,
      "jax_version": jax.__version__,
      "platforms": list(exported.platforms),
      "model": s.model,
      "dataset": ds.name,
      "step": int(run.step),
      "batch": num if num is not None else BATCH,
      "inputs": [
          {"name": "conditions", "shape": _shape(conditions.shape),
           **condition_info},
          {"name": "key_data", "shape": list(key_data.shape),
           "dtype": str(key_data.dtype), "key_impl": impl,
           "description": "jax.random.key_data(jax.random.key(seed))"},
      ],
      "outputs": [
          {"name": "images", "shape": _shape(images.shape),
           "dtype": str(images.dtype), "layout": "NHWC",
           "range": [0.0, 1.0]},
      ],
      "condition_kind": s.condition_kind,
      "class_names": _jsonable(ds.class_names),
      "attribute_names": _jsonable(ds.attribute_names),
      "sampling": {k: _jsonable(s[k]) for k in sampling_keys},
      "settings": _jsonable({k: v for k, v in s.to_dict().items()
                             if not k.startswith("_")}),
      "usage": ("exp = jax.export.deserialize(open(PATH, 'rb').read()); "
                "images = exp.call(conditions, "
                "jax.random.key_data(jax.random.key(seed)))"),
  }
  return exported, info


def write_export(workdir, out, *, platforms: str | Sequence[str] = ("cpu",),
                 num: int | None = None, step: int | None = None,
                 **sampling_options: Any) -> dict:
  """Exports the sampler of the run in `workdir` (its newest checkpoint, or
  `step`) to `out` (serialized bytes) and `out` + '.json' (the
  description, returned). `sampling_options` (diffusion: sampler, nfe,
  guidance_scale, clip_x0; None = as trained) are fixed in the export.
  Bad platforms, `num`, options or workdirs raise ValueError / OSError
  before anything is written."""
  from condgen_jax import api  # pylint: disable=g-import-not-at-top
  platforms = parse_platforms(platforms)
  check_num(num)
  out = epath.Path(out)
  if out.is_dir():
    raise IsADirectoryError(f"{out} is a folder; give a file name.")
  run = api.load(workdir, step=step).with_options(**sampling_options)
  exported, info = export_sampler(run, platforms, num)
  info["workdir"] = str(workdir)
  data = exported.serialize()
  out.parent.mkdir(parents=True, exist_ok=True)
  meta = epath.Path(f"{out}.json")
  for path, content in ((out, bytes(data)),
                        (meta, (json.dumps(info, indent=1) + "\n").encode())):
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_bytes(content)
    tmp.replace(path)
  return info
