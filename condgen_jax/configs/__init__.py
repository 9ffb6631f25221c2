"""Every experiment's config: `get_config()` of a module per config, each
starting from `common.base_config(model)`. `--config=experiments/configs/NAME.py`
loads the module of the same name here."""
