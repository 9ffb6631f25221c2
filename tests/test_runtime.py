"""Process-wide defaults of the entry points: XLA flags, threefry lowering,
malloc and CPU dispatch."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from condgen_jax import families
from condgen_jax.core import runtime

# Known-answer vectors of Threefry-2x32-20 from the Random123 distribution
# (kat_vectors): key, counter -> output.
KAT = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6b200159, 0x99ba4efe)),
    ((0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff),
     (0x1cb996fc, 0xbb002be7)),
    ((0x13198a2e, 0x03707344), (0x243f6a88, 0x85a308d3),
     (0xc4923a9c, 0x483df7a0)),
]


@pytest.mark.parametrize("key,count,expected", KAT)
def test_threefry2x32_matches_the_published_vectors(key, count, expected):
  u = lambda v: np.array([v], np.uint32)
  out = runtime.threefry2x32(u(key[0]), u(key[1]), u(count[0]), u(count[1]))
  assert (int(out[0][0]), int(out[1][0])) == expected


def test_unrolled_lowering_keeps_jax_bits_and_drops_the_loop():
  # A fresh process: draws under JAX's own CPU lowering, then the same draws
  # once the unrolled lowering is registered (caches cleared in between).
  script = textwrap.dedent("""
      import json, jax, jax.numpy as jnp, numpy as np
      from condgen_jax.core import runtime

      def draws():
        key = jax.random.key(3)
        k1, k2 = jax.random.split(jax.random.fold_in(key, 7))
        return (jax.random.bits(k1, (257,)), jax.random.normal(k2, (5, 3)),
                jax.random.randint(k1, (9,), 0, 1000))

      def loops():
        hlo = jax.jit(lambda k: jax.random.normal(k, (64,))).lower(
            jax.random.key(0)).compile().as_text()
        return hlo.count(" while(")

      before, loops_before = jax.jit(draws)() + draws(), loops()
      assert runtime.unroll_threefry_on_cpu()
      jax.clear_caches()
      after, loops_after = jax.jit(draws)() + draws(), loops()
      same = all(np.array_equal(a, b) for a, b in zip(before, after))
      print(json.dumps({"same": same,
                        "loops": [loops_before, loops_after]}))
  """)
  env = {k: v for k, v in os.environ.items() if k != "CONDGEN_KEEP_XLA_FLAGS"}
  r = subprocess.run([sys.executable, "-c", script], capture_output=True,
                     text=True, timeout=300, env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  out = r.stdout.strip().splitlines()[-1]
  assert out == '{"same": true, "loops": [1, 0]}', out


def test_keep_xla_flags_leaves_jax_untouched(monkeypatch):
  monkeypatch.setenv("CONDGEN_KEEP_XLA_FLAGS", "1")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  assert runtime.set_default_xla_flags() == "--xla_cpu_enable_fast_math=false"
  assert not runtime.unroll_threefry_on_cpu()


def test_default_xla_flags_add_only_what_the_user_did_not_name(monkeypatch):
  monkeypatch.delenv("CONDGEN_KEEP_XLA_FLAGS", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
  assert runtime.set_default_xla_flags() == (
      "--xla_cpu_experimental_ynn_fusion_type=dot")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  assert runtime.set_default_xla_flags() == (
      "--xla_force_host_platform_device_count=2 "
      "--xla_cpu_experimental_ynn_fusion_type=")


def test_keep_freed_memory_reuses_large_blocks_without_page_faults():
  # A fresh process mallocs, touches and frees a 64 MB block, twice, and
  # counts the minor page faults of the second touch. By default glibc
  # unmaps such a block on free, so each 4 KiB page faults again; kept, the
  # second block reuses the first one's pages.
  script = textwrap.dedent("""
      import ctypes, json, resource
      from condgen_jax.core import runtime

      libc = ctypes.CDLL("libc.so.6")
      libc.malloc.restype = ctypes.c_void_p
      libc.free.argtypes = [ctypes.c_void_p]

      def faults_of_a_fresh_block(size=64 << 20):
        block = libc.malloc(size)  # as XLA's allocations (numpy's differ)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ctypes.memset(block, 1, size)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        libc.free(block)
        return faults

      faults_of_a_fresh_block()
      default = faults_of_a_fresh_block()
      applied = runtime.keep_freed_memory()
      faults_of_a_fresh_block()
      kept = faults_of_a_fresh_block()
      print(json.dumps({"applied": applied, "default": default, "kept": kept}))
  """)
  env = {k: v for k, v in os.environ.items() if k != "CONDGEN_KEEP_XLA_FLAGS"}
  r = subprocess.run([sys.executable, "-c", script], capture_output=True,
                     text=True, timeout=300, env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  if not out["applied"]:
    pytest.skip("not glibc")
  pages = (64 << 20) // 4096
  assert out["default"] > pages // 2, out
  assert out["kept"] < pages // 100, out


def test_synchronous_cpu_dispatch_only_for_models_with_convolutions(
    monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from condgen_jax.configs import acgan, cgan_mlp, cvae  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("CONDGEN_KEEP_XLA_FLAGS", raising=False)
  conv_cvae = cvae.get_config()
  conv_cvae.architecture = "conv"
  name = "jax_cpu_enable_async_dispatch"
  was = jax.config.values[name]
  try:
    for config, conv in [(acgan.get_config(), True), (conv_cvae, True),
                         (cgan_mlp.get_config(), False),
                         (cvae.get_config(), False)]:
      jax.config.update(name, True)
      assert runtime.synchronous_cpu_dispatch(
          families.convolutional(config)) == conv
      assert jax.config.values[name] == (not conv)
    monkeypatch.setenv("CONDGEN_KEEP_XLA_FLAGS", "1")
    jax.config.update(name, True)
    assert not runtime.synchronous_cpu_dispatch(
        families.convolutional(acgan.get_config()))
    assert jax.config.values[name]
  finally:
    jax.config.update(name, was)


def test_importing_the_families_starts_no_backend():
  """The entry points import the family module (has_convolutions) before
  jax.distributed.initialize and the CPU dispatch setting: that import must
  not start the XLA backend."""
  code = ("import condgen_jax.families as f\n"
          "for m in f.MODELS: f.get_family(m)\n"
          "import condgen_jax.runner.train\n"
          "from jax._src import xla_bridge\n"
          "print(bool(xla_bridge._backends))\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "False"
