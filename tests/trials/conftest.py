"""Fixtures for the trial runner (the tiny model and data live in tests/conftest.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.conftest import make_rows  # noqa: E402,F401  (re-exported for the tests of this area)


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch, tmp_path_factory):
    """Tests share two cores with other work; caches go to a per-session folder."""
    torch.set_num_threads(1)
    monkeypatch.setenv("AUTOPEFT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
