"""Shared test fixtures. Tests that need ../shared/data skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEDLEAK_SHARED_DATA", ROOT.parent / "shared" / "data"))
CIFAR_TARBALL = SHARED_DATA / "cifar10-train-jpeg.tar.gz"
MNIST_DIR = SHARED_DATA / "mnist-test"

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


@pytest.fixture
def cifar_spec() -> str:
    if not CIFAR_TARBALL.exists():
        pytest.skip("shared CIFAR-10 tarball not present")
    return f"imagefolder:{CIFAR_TARBALL}"


@pytest.fixture
def mnist_spec() -> str:
    if not MNIST_DIR.exists():
        pytest.skip("shared MNIST test digits not present")
    return f"mnist:{MNIST_DIR}"


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FEDLEAK_CACHE", str(tmp_path / "cache"))
    from fedleak.data import registry

    monkeypatch.setattr(registry, "_CACHE", {})
    return tmp_path / "cache"


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the fedleak CLI in-process; returns (exit code, stdout, stderr)."""
    from fedleak.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err
