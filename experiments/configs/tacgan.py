"""`--config=experiments/configs/tacgan.py`: the config of `condgen_jax/configs/tacgan.py`."""

from condgen_jax.configs.tacgan import get_config  # pylint: disable=unused-import
