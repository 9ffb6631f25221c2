"""`--config=experiments/configs/r3gan.py`: the config of `condgen_jax/configs/r3gan.py`."""

from condgen_jax.configs.r3gan import get_config  # pylint: disable=unused-import
