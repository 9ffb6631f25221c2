"""`--config=experiments/configs/infogan_style.py`: the config of `condgen_jax/configs/infogan_style.py`."""

from condgen_jax.configs.infogan_style import get_config  # pylint: disable=unused-import
