"""Every SIMD path of the CPU kernels (scalar, AVX2, AVX-512) passes the tests of the ops that have
one (the searches, gather_weight_net_sum and batch_norm_training).

The library picks the widest instruction set the CPU runs when it loads; JSNET_CPU_ISA narrows
it, so each path runs in its own process. Paths this CPU lacks fall back and are skipped."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SIMD_TESTS = [
    "tests/ops/test_farthest_point_sample.py",
    "tests/ops/test_query_ball_point.py",
    "tests/ops/test_knn_point.py",
    "tests/ops/test_three_nn.py",
    "tests/ops/test_gather_weight_net_sum.py",
    "tests/ops/test_batch_norm_training.py",
]


def _cpu_flags():
    try:
        return pathlib.Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []


@pytest.mark.slow
@pytest.mark.parametrize("isa,flags", [("scalar", ()), ("avx2", ("avx2", "fma")), ("avx512", ("avx512f",))])
def test_simd_ops_on_each_instruction_set(isa, flags):
    missing = [flag for flag in flags if flag not in _cpu_flags()]
    if missing:  # the library would fall back to a narrower path
        pytest.skip(f"this CPU has no {', '.join(missing)}")
    env = {**os.environ, "JSNET_CPU_ISA": isa}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "custom", *SIMD_TESTS],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
