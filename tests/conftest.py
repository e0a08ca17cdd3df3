"""Suite-wide set-up: TVM compiles read and write a tuning database of their own (never ~/.cache);
under pytest-xdist, one TVM runtime thread per worker."""

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER") and "TVM_NUM_THREADS" not in os.environ:
    # the workers already fill the cores: a pool of every core in each would oversubscribe them
    # (its idle threads spin). tests/test_tvm_schedules.py runs a library on the full pool.
    os.environ["TVM_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _private_tuning_db(tmp_path_factory):
    """A verdict must not depend on records a user's earlier tuning left in ~/.cache/kiln/tvm-db."""
    if "KILN_TUNING_DB" in os.environ:
        yield
        return
    os.environ["KILN_TUNING_DB"] = str(tmp_path_factory.mktemp("tvm-db"))
    try:
        yield
    finally:
        os.environ.pop("KILN_TUNING_DB", None)
