import math

import pytest

from jsnet_tf import schedules


@pytest.mark.parametrize("batch,steps", [(24, 12500), (8, 37500), (48, 6250), (7, 42857)])
def test_decay_steps_scale_with_the_batch_like_the_original(batch, steps):
    assert schedules.decay_steps_for(batch) == steps  # int(12500 / (batch / 24))


@pytest.mark.parametrize("step", [0, 1, 12499, 12500, 25000, 37499, 100000, 10**6])
def test_learning_rate_matches_the_reference_formula(step):
    lr = schedules.StaircaseDecay(1e-3, 12500, 0.5, 1e-5)
    want = max(1e-3 * 0.5 ** math.floor(step / 12500), 1e-5)
    assert float(lr(step)) == pytest.approx(want, rel=1e-6)


def test_learning_rate_floor_and_config():
    lr = schedules.StaircaseDecay(1e-3, 100, 0.5, 1e-5)
    assert float(lr(10**5)) == pytest.approx(1e-5)
    assert schedules.StaircaseDecay.from_config(lr.get_config()).get_config() == lr.get_config()


@pytest.mark.parametrize(
    "step,want", [(0, 0.5), (12499, 0.5), (12500, 0.75), (25000, 0.875), (12500 * 5, 0.984375), (12500 * 6, 0.99), (10**7, 0.99)]
)
def test_bn_decay_matches_the_reference_formula(step, want):
    assert float(schedules.bn_decay(step, 12500)) == pytest.approx(want, rel=1e-6)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be positive"):
        schedules.decay_steps_for(0)
