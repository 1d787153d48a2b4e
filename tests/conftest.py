"""Test-wide settings: quiet TensorFlow, fresh but reproducible random inputs.

Every run draws a new base seed (shown in pytest's header); set JSNET_TEST_SEED=<seed> to replay a
run exactly.
"""

import os
import secrets
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

BASE_SEED = int(os.environ.get("JSNET_TEST_SEED") or secrets.randbelow(2**31))


def pytest_report_header(config):
    return f"random inputs: JSNET_TEST_SEED={BASE_SEED}"


@pytest.fixture
def rng(request):
    """A generator for this test: fresh each run, replayable with JSNET_TEST_SEED."""
    return np.random.default_rng([BASE_SEED, zlib.crc32(request.node.nodeid.encode())])


@pytest.fixture(params=["custom", "reference"])
def impl(request):
    """Runs the test body with the `custom` (compiled) or `reference` (pure-TF) ops.

    The custom variant fails, rather than skips, when the library is not built: `make test`
    builds it, and a silently skipped half of the suite would hide a broken build.
    """
    from jsnet_tf import ops

    if request.param == "custom":
        ops.library.load()
    with ops.use_implementation(request.param):
        yield request.param
