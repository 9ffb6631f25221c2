"""Conditional VAE on MNIST (Sohn et al. 2015).

  python -m experiments.train --config=experiments/configs/cvae.py \
      --workdir=/tmp/cvae [--config.prior=standard] [--config.condition=none]

`--config.condition=none` gives the unconditional VAE baseline;
`--config.prior=standard|learned` picks N(0, I) or a learned p(z|c);
`--config.architecture=conv --config.conditioning=film|vectorize|embed_channel`
the conv variant.
"""

from condgen_jax.configs import common


def get_config():
  c = common.base_config("cvae")
  c.num_steps = 20_000
  c.batch_size = 128
  c.learning_rate = 1e-3
  c.latent_dim = 16
  c.architecture = "mlp"  # 'mlp' | 'conv'
  c.prior = "learned"  # 'standard' | 'learned'
  c.condition = "label"  # 'label' | 'none'
  c.conditioning = "vectorize"  # conv only: 'vectorize' | 'film' | 'embed_channel'
  c.hidden = (512, 256)
  c.channels = (32, 64)
  c.binarize = True  # dynamically binarised data, the usual VAE protocol
  c.best_metric = "test_neg_elbo"
  c.iw_samples = 0  # importance samples of the IWAE bound in evaluation
  return c
