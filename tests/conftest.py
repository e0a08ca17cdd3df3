"""Suite-wide set-up: TVM compiles read and write a tuning database of their own (never ~/.cache)."""

import os

import pytest


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
