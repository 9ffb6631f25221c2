"""`--config=experiments/configs/cgan_conv.py`: the config of `condgen_jax/configs/cgan_conv.py`."""

from condgen_jax.configs.cgan_conv import get_config  # pylint: disable=unused-import
