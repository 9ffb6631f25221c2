"""`--config=experiments/configs/distill.py`: the config of `condgen_jax/configs/distill.py`."""

from condgen_jax.configs.distill import get_config  # pylint: disable=unused-import
