"""Every module of the package sits in a layer of the import contract (pyproject.toml,
checked by lint-imports in .ci/test.sh): a new module outside every layer would be
unconstrained, and an upward import from it would go unnoticed."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")

ROOT = Path(__file__).resolve().parent.parent


def _contracts() -> list[dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["importlinter"]["contracts"]


def test_every_module_is_in_a_layer() -> None:
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    listed = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    package = ROOT / "ipybgfetch"
    modules = {
        f"ipybgfetch.{p.stem if p.is_file() else p.name}"
        for p in package.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    modules.discard("ipybgfetch.testing")  # stands alone: its own contract
    assert modules - listed == set(), "add these to the layers contract in pyproject.toml"
    assert listed - modules == set(), "the layers contract names modules that do not exist"


def test_testing_stands_alone_from_every_other_module() -> None:
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    listed = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    alone = next(c for c in _contracts() if c.get("source_modules") == ["ipybgfetch.testing"])
    assert set(alone["forbidden_modules"]) == listed
