"""`--config=experiments/configs/cvae_sop.py`: the config of `condgen_jax/configs/cvae_sop.py`."""

from condgen_jax.configs.cvae_sop import get_config  # pylint: disable=unused-import
