"""condgen-jax: conditional generative models in JAX/Flax.

The package by role: `core` (config keys, workdir files and checkpoints,
the device mesh, process settings), `nn` (layers, conditioning, the
injected XLA:CPU kernels), `models` (networks), `losses`, `diffusion`
(schedules and samplers), `data`, `families` (one module per model family),
`evaluation`, `runner` (the training loop), `configs` (every experiment's
config), `tools` (the README's report, plots and benchmark).

The names below are `condgen_jax.api`'s, imported on first use: importing
the package starts nothing, so the entry points can set XLA's flags first.
"""

__version__ = "0.1.0"
__all__ = ("Trained", "load", "train", "resolve", "init_state", "train_step")


def __getattr__(name):
  if name in __all__:
    from condgen_jax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  raise AttributeError(f"module 'condgen_jax' has no attribute {name!r}")
