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


TINY_POINTS = 512


@pytest.fixture(scope="session")
def tiny_s3dis(tmp_path_factory):
    """A prepared synthetic S3DIS of two areas with one room each, 512-point blocks (shared by the
    training, distribution and evaluation tests)."""
    from jsnet_tf.data import prepare_s3dis, synthetic

    root = tmp_path_factory.mktemp("tiny_s3dis")
    synthetic.generate(root / "raw", seed=1, areas=2, rooms_per_area=1, points_per_m2=200)
    prepare_s3dis.prepare(root / "raw", root / "prepared", num_points=TINY_POINTS, progress=False)
    return root / "prepared"


@pytest.fixture(scope="session")
def tiny_s3dis_split(tmp_path_factory):
    """Like `tiny_s3dis` with two rooms per area, so that a validation room can leave a training
    area without emptying it."""
    from jsnet_tf.data import prepare_s3dis, synthetic

    root = tmp_path_factory.mktemp("tiny_s3dis_split")
    synthetic.generate(root / "raw", seed=1, areas=2, rooms_per_area=2, points_per_m2=200)
    prepare_s3dis.prepare(root / "raw", root / "prepared", num_points=TINY_POINTS, progress=False)
    return root / "prepared"


def tiny_overrides(data_dir, **train):
    """Config overrides for a small, fast network on `tiny_s3dis`. The loop's tests draw 8 random
    corners per room (2 steps an epoch); the resampled epochs of the default sampling (about 90
    blocks per tiny room) are tested in tests/data/test_sampling.py and once through the loop."""
    return [
        f'data.data_dir="{data_dir}"',
        f"data.num_points={TINY_POINTS}",
        'data.sampling="random_corners"',
        "data.blocks_per_room=8",
        "model.npoints=[256, 64, 32, 16]",
        "train.batch_size=4",
        "train.epochs=2",
    ] + [f"train.{k}={v}" for k, v in train.items()]
