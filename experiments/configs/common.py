"""Config keys shared by every model's config."""

import ml_collections


def base_config(model: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = model
  c.dataset = "mnist"  # 'digits' | 'mnist' | 'fashion_mnist'
  c.data_dir = ""  # folder with <dataset>/ IDX files; '' = $CONDGEN_DATA_DIR
  c.tfds_dir = ""  # TFDS data dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.download = False  # let tensorflow-datasets download when nothing is local
  c.seed = 0
  # jax.random implementation of the training keys; the results table used
  # the JAX default, threefry2x32 (on CPU the entry points lower its hash
  # unrolled, same bits: condgen_jax.runtime). 'philox4x32' is the other
  # counter-based choice.
  c.prng_impl = "threefry2x32"
  c.num_steps = 10_000
  c.batch_size = 64
  c.steps_per_call = 0  # steps fused into one compiled call; 0 = auto
  c.log_every = 100
  c.checkpoint_every = 1000
  c.sample_every = 1000
  c.eval_every = 0  # evaluate every N steps (0 = never during training)
  c.eval_num_per_class = 100  # samples per class for evaluation in training
  c.best_metric = "fid"  # kept under workdir/best/ when eval_every > 0
  c.samples_per_class = 10  # columns of the sample grid
  c.max_to_keep = 2
  # Resume a workdir whose run used other values of keys that change what
  # it computes (seed, batch size, model or optimiser keys); the change is
  # recorded in config_history.jsonl.
  c.allow_config_change = False
  return c
