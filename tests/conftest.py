"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest

from ntdmbench.datasets.synthetic.generate import generate


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """The synthetic ``smoke`` preset's PASCAL3D+ root (car and sofa), generated once per test session."""
    out = tmp_path_factory.mktemp("synth")
    generate(out, "smoke", seed=0)
    return out / "pascal3d"
