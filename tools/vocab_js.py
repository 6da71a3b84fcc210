"""Write js/src/vocab.js, the panel's copy of ipybgfetch/_vocab.py (states, failure reasons,
the snapshot's shape as JSDoc types).

    python tools/vocab_js.py           # (re)write js/src/vocab.js
    python tools/vocab_js.py --check   # exit 1 if the committed copy is stale

tests/test_vocab.py runs the check, so a change to _vocab.py without a regenerated copy
fails the tests.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "js" / "src" / "vocab.js"
sys.path.insert(0, str(ROOT))

from ipybgfetch import _vocab  # noqa: E402

CONSTANTS = ("RECORD_STATES", "REGISTRATION_STATES", "RESULTS", "FAILURE_REASONS")
ALIASES = ("RecordState", "RegistrationState", "Result", "FailureReason")
TYPED_DICTS = ("ClusterWorkerSnapshot", "ClusterSnapshot", "RecordSnapshot", "Snapshot")
KEY_CONSTANTS = {"Snapshot": "SNAPSHOT_KEYS", "RecordSnapshot": "RECORD_SNAPSHOT_KEYS"}


def _js_type(tp: object) -> str:
    """A JSDoc (TypeScript) type for an annotation of _vocab."""
    for alias in ALIASES:
        if tp == getattr(_vocab, alias):
            return alias
    for name in TYPED_DICTS:
        if tp is getattr(_vocab, name):
            return name
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _js_type(a) for a in args)
    if origin is list:
        return f"Array<{_js_type(args[0])}>"
    if origin is dict:
        return f"Record<{_js_type(args[0])}, {_js_type(args[1])}>"
    simple = {str: "string", int: "number", float: "number", bool: "boolean"}
    if tp in simple:
        return simple[tp]  # type: ignore[index]
    raise TypeError(f"no JS type for {tp!r}: extend tools/vocab_js.py")


def render() -> str:
    out = [
        "// Generated from ipybgfetch/_vocab.py by tools/vocab_js.py: do not edit by hand.",
        "// Regenerate with `python tools/vocab_js.py`; tests/test_vocab.py checks it.",
        "",
    ]
    for alias in ALIASES:
        union = " | ".join(json.dumps(v) for v in typing.get_args(getattr(_vocab, alias)))
        out.append(f"/** @typedef {{{union}}} {alias} */")
    out.append("")
    for name in CONSTANTS:
        values = ", ".join(json.dumps(v) for v in getattr(_vocab, name))
        out.append(f"export const {name} = Object.freeze([{values}]);")
    settled = ", ".join(json.dumps(v) for v in sorted(_vocab.SETTLED_STATES))
    out.append("/** The states a record or registration never leaves. */")
    out.append(f"export const SETTLED_STATES = new Set([{settled}]);")
    for name in TYPED_DICTS:
        cls = getattr(_vocab, name)
        hints = typing.get_type_hints(cls)
        doc = " ".join((cls.__doc__ or "").split()).replace("``", "`")
        out += ["", "/**", f" * {doc}", f" * @typedef {{object}} {name}"]
        out += [f" * @property {{{_js_type(tp)}}} {key}" for key, tp in hints.items()]
        out.append(" */")
        if name in KEY_CONSTANTS:
            keys = ", ".join(json.dumps(k) for k in hints)
            out.append(f"export const {KEY_CONSTANTS[name]} = Object.freeze([{keys}]);")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is stale: run python tools/vocab_js.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
