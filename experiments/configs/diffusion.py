"""`--config=experiments/configs/diffusion.py`: the config of `condgen_jax/configs/diffusion.py`."""

from condgen_jax.configs.diffusion import get_config  # pylint: disable=unused-import
