"""`--config=experiments/configs/cgan_mlp.py`: the config of `condgen_jax/configs/cgan_mlp.py`."""

from condgen_jax.configs.cgan_mlp import get_config  # pylint: disable=unused-import
