"""Fixtures of the op tests: every behaviour test runs on both implementations."""

import pytest

from jsnet_tf import ops


@pytest.fixture(params=ops.IMPLEMENTATIONS)
def impl(request):
    """Runs the test body with the `custom` (compiled) or `reference` (pure-TF) ops.

    The custom variant fails, rather than skips, when the library is not built: `make test`
    builds it, and a silently skipped half of the suite would hide a broken build.
    """
    if request.param == "custom":
        ops.library.load()
    with ops.use_implementation(request.param):
        yield request.param
