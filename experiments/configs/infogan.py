"""`--config=experiments/configs/infogan.py`: the config of `condgen_jax/configs/infogan.py`."""

from condgen_jax.configs.infogan import get_config  # pylint: disable=unused-import
