"""`--config=experiments/configs/cifar10.py`: the config of `condgen_jax/configs/cifar10.py`."""

from condgen_jax.configs.cifar10 import get_config  # pylint: disable=unused-import
