"""`--config=experiments/configs/acgan.py`: the config of `condgen_jax/configs/acgan.py`."""

from condgen_jax.configs.acgan import get_config  # pylint: disable=unused-import
