from condgen_jax.core import hardware


def test_cpu_isa_is_the_widest_named_extension():
  assert hardware.cpu_isa("fpu sse2 avx avx2 fma") == "AVX2"
  assert hardware.cpu_isa("avx2 avx512f avx512bw") == "AVX-512"
  assert hardware.cpu_isa("avx2 avx512f amx_tile amx_bf16") == "AMX"
  assert hardware.cpu_isa("fpu sse2 avx") == ""
  # whole flags only: 'avx2' inside another name does not count
  assert hardware.cpu_isa("xavx2y") == ""


def test_cpuinfo_reads_the_first_processor(tmp_path):
  path = tmp_path / "cpuinfo"
  path.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13 64-Core "
                  "Processor\nflags\t\t: fpu avx2\n\nprocessor\t: 1\n"
                  "model name\t: other\n")
  info = hardware._cpuinfo(str(path))
  assert info["model name"] == "AMD EPYC 7B13 64-Core Processor"
  assert info["flags"] == "fpu avx2"
  assert hardware._cpuinfo(str(tmp_path / "missing")) == {}


def test_summary():
  cpu = {"platform": "cpu", "device_count": 1, "cpu_cores": 2,
         "cpu": "AMD EPYC 7B13 64-Core Processor", "cpu_isa": "AVX2"}
  assert hardware.summary(cpu) == "2-core AMD EPYC 7B13 (AVX2)"
  intel = {**cpu, "cpu": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
           "cpu_isa": "AMX", "cpu_cores": 4}
  assert hardware.summary(intel) == "4-core Intel Xeon Platinum 8481C (AMX)"
  gpu = {"platform": "gpu", "device_kind": "NVIDIA H200", "device_count": 1}
  assert hardware.summary(gpu) == "1× NVIDIA H200"


def test_describe_names_this_process():
  d = hardware.describe()
  assert d["platform"] == "cpu" and d["device_count"] >= 1
  assert d["cpu_cores"] == hardware.cpu_cores() >= 1
