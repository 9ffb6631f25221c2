"""`--config=experiments/configs/cvae_conv.py`: the config of `condgen_jax/configs/cvae_conv.py`."""

from condgen_jax.configs.cvae_conv import get_config  # pylint: disable=unused-import
