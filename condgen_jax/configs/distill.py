"""Progressive distillation (Salimans & Ho 2022) of a diffusion run into a
2-step sampler, its classifier-free guidance distilled in (Meng et al.
2023):

  python -m experiments.train --config=experiments/configs/distill.py \
      --config.teacher_workdir=DIR --workdir=/tmp/distill

The teacher's DDIM at 16 steps (with its guidance) is halved three times,
16 -> 8 -> 4 -> 2, in phases of 800 steps of 64; the student
samples with 2 network evaluations and no guidance. The teacher must be a
v, EDM or flow-matching run (`condgen_jax.families.distillation`).
"""

from condgen_jax.configs import common


def get_config():
  c = common.base_config("diffusion_distill")
  c.num_steps = 2_400
  c.batch_size = 64
  return c
