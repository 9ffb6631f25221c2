"""Structured output prediction on MNIST: Sohn et al. 2015's CVAE completes
the quadrants of a digit not given (Sec. 5.1), or its deterministic
baseline network does.

  python -m experiments.train --config=experiments/configs/cvae_sop.py \
      --workdir=/tmp/sop_q1 [--config.quadrants_given=2] \
      [--config.network=baseline]

`quadrants_given` = 1 (bottom-left), 2 (left half) or 3 (all but the
bottom-right); `network=baseline` is the deterministic network of the same
widths, trained on the same loss with the same steps and batch.
`experiments.evaluate` reports `test_ncll`, the test negative conditional
log-likelihood of the missing pixels in nats, importance-sampled with
k = 100 for the CVAE. Widths as in Pyro's reproduction of the experiment
(two hidden layers of 500 per network, z of 200).
"""

from condgen_jax.configs import common


def get_config():
  c = common.base_config("cvae_sop")
  c.condition_kind = "image"
  c.image_task = "quadrants"
  c.quadrants_given = 1  # 1 | 2 | 3
  c.network = "cvae"  # 'cvae' | 'baseline'
  c.num_steps = 20_000
  c.batch_size = 128
  c.learning_rate = 1e-3
  c.latent_dim = 200
  c.hidden = (500, 500)
  c.binarize = True
  c.iw_samples = 100  # k of the importance-sampled test NCLL
  c.best_metric = "test_ncll"
  return c
