"""`--config=experiments/configs/celeb_a.py`: the config of `condgen_jax/configs/celeb_a.py`."""

from condgen_jax.configs.celeb_a import get_config  # pylint: disable=unused-import
