"""The small cases the GPU self-check and jsnet-doctor run (jsnet_tf.ops.op_cases): one per public
op, each passing on both implementations against the float64 brute force, and a wrong answer in
any output or gradient is reported."""

import numpy as np
import pytest

from jsnet_tf import ops
from jsnet_tf.ops import op_cases

NOT_OPS = {"IMPLEMENTATIONS", "OpLibraryError", "UnknownImplementationError", "implementation", "set_implementation", "use_implementation"}


def test_every_public_op_has_a_case():
    assert sorted(case.name for case in op_cases.CASES) == sorted(set(ops.__all__) - NOT_OPS)


@pytest.mark.parametrize("case", op_cases.CASES, ids=lambda case: case.name)
def test_case_passes_on_both_implementations(impl, case, rng):
    trial = op_cases.draw(case, rng)
    outputs, grad = op_cases.expected(trial)
    assert (grad is None) == (case.grad_arg is None)
    result = op_cases.run(trial, ops._MODULES[impl], "/CPU:0")
    assert op_cases.differences(case, result, outputs, grad) == []
    assert result.device.endswith("CPU:0")


@pytest.mark.parametrize("case", op_cases.CASES, ids=lambda case: case.name)
def test_a_changed_value_is_reported(case, rng):
    """One value off in the last output (or in the gradient) is found, and named."""
    trial = op_cases.draw(case, rng)
    outputs, grad = op_cases.expected(trial)
    result = op_cases.run(trial, ops.reference, "/CPU:0")
    last = result.outputs[-1]
    last.flat[-1] = last.flat[-1] + (1 if np.issubdtype(last.dtype, np.integer) else 0.01)
    where = tuple(size - 1 for size in last.shape)
    assert op_cases.differences(case, result, outputs, grad) == [
        f"output {len(outputs) - 1} differs at 1 of {last.size} values (first at {where}: "
        f"{float(last[where]):.7g} vs {float(outputs[-1][where]):.7g})"
    ]
    if grad is not None:
        several = isinstance(grad, tuple)
        for i, want in enumerate(grad if several else (grad,)):
            result = op_cases.run(trial, ops.reference, "/CPU:0")
            changed = result.grad[i] if several else result.grad
            changed.flat[0] *= 1.5
            changed.flat[0] += 0.01
            what = f"gradient w.r.t. argument {case.grad_arg[i]}" if several else "gradient"
            assert [d.split(" (")[0] for d in op_cases.differences(case, result, outputs, grad)] == [
                f"{what} differs at 1 of {want.size} values"
            ]
