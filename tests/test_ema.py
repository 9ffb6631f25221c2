import jax.numpy as jnp
import numpy as np

from condgen_jax.families import ema


def test_decay_warms_up_to_the_configured_value():
  n = np.array([1, 2, 10, 100, 1000, 10_000])
  expected = np.minimum(0.999, (1 + n) / (10 + n))  # 2/11, 3/12, ...
  np.testing.assert_allclose(ema.decay_at(0.999, n), expected, rtol=1e-6)
  assert float(ema.decay_at(0.999, 1)) == np.float32(2 / 11)
  assert float(ema.decay_at(0.9, 10_000)) == np.float32(0.9)


def test_update_is_the_weighted_average_by_hand():
  params = {"w": jnp.array([1.0, 3.0]), "b": jnp.array(-2.0)}
  average = {"w": jnp.array([0.0, 1.0]), "b": jnp.array(4.0)}
  out = ema.update(average, params, 0.5, 1)  # d = min(0.5, 2/11) = 2/11
  d = 2 / 11
  np.testing.assert_allclose(out["w"], [d * 0 + (1 - d) * 1,
                                        d * 1 + (1 - d) * 3], rtol=1e-6)
  np.testing.assert_allclose(out["b"], d * 4 + (1 - d) * -2, rtol=1e-6)
  late = ema.update(average, params, 0.5, 1000)  # d = 0.5
  np.testing.assert_allclose(late["b"], 0.5 * 4 + 0.5 * -2, rtol=1e-6)
