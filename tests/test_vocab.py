"""ipybgfetch._vocab: the one definition of states, failure reasons and the panel's
snapshot; the panel's generated JS copy stays equal to it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import typing
from pathlib import Path

from ipybgfetch import _vocab

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "vocab_js.py"


def _tool():
    spec = importlib.util.spec_from_file_location("vocab_js", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_js_copy_equals_a_fresh_generation():
    committed = (ROOT / "js" / "src" / "vocab.js").read_text(encoding="utf-8")
    assert committed == _tool().render(), "js/src/vocab.js is stale: python tools/vocab_js.py"


def test_the_check_mode_fails_on_a_stale_copy(tmp_path, monkeypatch):
    tool = _tool()
    stale = tmp_path / "vocab.js"
    stale.write_text(tool.render().replace('"bad-status"', '"bad-state"'), encoding="utf-8")
    monkeypatch.setattr(tool, "TARGET", stale)
    assert tool.main(["--check"]) == 1
    stale.write_text(tool.render(), encoding="utf-8")
    assert tool.main(["--check"]) == 0


def test_the_js_module_exports_the_same_values():
    code = (
        f"import({str(ROOT / 'js' / 'src' / 'vocab.js')!r}).then(m => console.log(JSON.stringify("
        "{r: m.RECORD_STATES, g: m.REGISTRATION_STATES, f: m.FAILURE_REASONS, "
        "s: [...m.SETTLED_STATES].sort(), k: m.SNAPSHOT_KEYS})))"
    )
    out = subprocess.run(["node", "-e", code], capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    assert got["r"] == list(_vocab.RECORD_STATES)
    assert got["g"] == list(_vocab.REGISTRATION_STATES)
    assert got["f"] == list(_vocab.FAILURE_REASONS)
    assert got["s"] == sorted(_vocab.SETTLED_STATES)
    assert got["k"] == list(typing.get_type_hints(_vocab.Snapshot))


def test_a_registrations_snapshot_has_exactly_the_declared_keys(mgr, server):
    reg = mgr.fetch("vocab", [server.url("a.bin", 1000), server.url("missing", 10, status=404)])
    reg.wait(30)
    snap = reg._snapshot()
    assert list(snap) == list(typing.get_type_hints(_vocab.Snapshot))
    for rec in snap["records"]:
        assert list(rec) == list(typing.get_type_hints(_vocab.RecordSnapshot))
        assert rec["state"] in _vocab.RECORD_STATES
    assert snap["state"] in _vocab.REGISTRATION_STATES
    assert snap["result"] in _vocab.RESULTS
    assert snap["failure_reason"] in _vocab.FAILURE_REASONS
    assert snap["failure_reason"] == "bad-status"


def test_settled_states_are_states_of_both():
    assert set(_vocab.SETTLED_STATES) <= set(_vocab.RECORD_STATES)
    assert set(_vocab.SETTLED_STATES) <= set(_vocab.REGISTRATION_STATES)
