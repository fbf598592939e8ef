"""Fixtures of the training tests: the prepared arith base model and trex homes that use it.

The fully pretrained base model is built once and cached under the repo's
``.trex-test-cache/`` (override with env TREX_TEST_CACHE); later sessions reuse it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_cache_dir() -> Path:
    return Path(os.environ.get("TREX_TEST_CACHE") or REPO / ".trex-test-cache")


test_cache_dir.__test__ = False  # not a test


@pytest.fixture(scope="session")
def arith_base() -> Path:
    """Folder of the fully pretrained arith base model (seed 0), built on first use (minutes on a CPU)."""
    from ftbench.arith import prepare_base_model

    return prepare_base_model(cache_dir=test_cache_dir() / "models" / "arith-base-0", seed=0)


@pytest.fixture
def arith_home(tmp_path, arith_base) -> Path:
    """A fresh trex home whose models/arith-base-0 is (a copy of) the prepared base model."""
    home = tmp_path / "trex-home"
    dest = home / "models" / "arith-base-0"
    dest.parent.mkdir(parents=True)
    shutil.copytree(arith_base, dest)
    return home
