"""`--config=experiments/configs/pix2pix.py`: the config of `condgen_jax/configs/pix2pix.py`."""

from condgen_jax.configs.pix2pix import get_config  # pylint: disable=unused-import
