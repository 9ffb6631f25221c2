"""`--config=experiments/configs/cvae.py`: the config of `condgen_jax/configs/cvae.py`."""

from condgen_jax.configs.cvae import get_config  # pylint: disable=unused-import
