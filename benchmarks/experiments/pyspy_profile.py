"""Profile ipybgfetch on benchmark cases 1-3 with py-spy (every thread, optionally native).

    python benchmarks/experiments/pyspy_profile.py --case 1 [--native] [--variant JSON]

Starts the same static server as ``run.py`` on the same generated data (kept in
``/dev/shm/ipybgfetch-bench/www``), runs one ``_worker.py`` download under
``py-spy record --format raw --threads``, and prints, per thread, the functions with the
most *inclusive* and *self* samples. The raw collapsed stacks go to
``benchmarks/experiments/profiles/`` (open them in speedscope or inferno if you like).

py-spy is used rather than pyinstrument because the work happens on ipybgfetch's engine
thread (and its callback thread), and py-spy samples every thread of the process from
outside, without slowing it down much.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import run as bench  # noqa: E402
from _servers import StaticServer  # noqa: E402


def analyze(raw: Path, top: int = 25) -> str:
    """Inclusive and self sample counts per function, per thread, from py-spy raw output."""
    per_thread: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    self_t: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0]
        # thread frame looks like: process 123:"python ..." ;thread (0x..): "name"
        if frames and frames[0].startswith("process"):
            frames = frames[1:]
            thread = frames[0] if frames else "?"
        frames = frames[1:]
        totals[thread] += n
        seen = set()
        for f in frames:
            key = _short(f)
            if key not in seen:
                per_thread[thread][key] += n
                seen.add(key)
        if frames:
            self_t[thread][_short(frames[-1])] += n
    out = []
    grand = sum(totals.values())
    for thread, total in totals.most_common():
        if total < grand * 0.02:
            continue
        out.append(f"\n=== {thread}: {total} samples ({100 * total / grand:.0f}% of all)")
        out.append("  inclusive:")
        for k, v in per_thread[thread].most_common(top):
            out.append(f"    {100 * v / total:5.1f}%  {k}")
        out.append("  self:")
        for k, v in self_t[thread].most_common(top):
            out.append(f"    {100 * v / total:5.1f}%  {k}")
    return "\n".join(out)


def boundaries(raw: Path, thread_name: str = "ipybgfetch-engine", top: int = 30) -> str:
    """Charge each sample of one thread to (deepest ipybgfetch frame -> what it called).

    Shows where the engine's time goes in ipybgfetch's own terms: "_attempt -> AsyncClient.send"
    is the HTTP layer, "_receive -> open" the file open, "_checkpoint -> Store..." SQLite.
    """
    buckets: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if thread_name not in stack.split(";", 1)[0]:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")[1:]
        idx = max((i for i, f in enumerate(frames) if "ipybgfetch/" in f), default=None)
        if idx is None:
            key = "(event loop: " + _short(frames[-1]) + ")" if frames else "?"
        else:
            own = _short(frames[idx])
            callee = _short(frames[idx + 1]) if idx + 1 < len(frames) else "(self)"
            key = f"{own} -> {callee}"
        buckets[key] += n
    out = [f"\n=== {thread_name}: {total} samples, by ipybgfetch frame -> callee"]
    for k, v in buckets.most_common(top):
        out.append(f"  {100 * v / total:5.1f}%  {k}")
    return "\n".join(out)


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py:123)"
    name, _, loc = frame.partition(" (")
    loc = loc.rstrip(")")
    file, _, lineno = loc.rpartition(":")
    return f"{name} ({Path(file).name}:{lineno})" if file else name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="1", choices=["1", "2", "3"])
    ap.add_argument("--native", action="store_true")
    ap.add_argument("--rate", type=int, default=250)
    ap.add_argument("--variant", default="{}")
    ap.add_argument("--label", default="")
    ap.add_argument("--nolines", action="store_true", help="aggregate by function, not line")
    ap.add_argument("--analyze", type=Path, help="only print the report of an existing raw file")
    args = ap.parse_args()
    if args.analyze:
        print(analyze(args.analyze) + "\n" + boundaries(args.analyze))
        return

    sizes = bench.FULL
    work = bench.DEFAULT_WORK
    data = bench.Data(work / "www")
    data.root.mkdir(parents=True, exist_ok=True)
    if args.case == "1":
        rel, _ = data.big(sizes.one)
        rels, conns = [rel], 1
    elif args.case == "2":
        rels, conns = data.many(sizes.many_n, sizes.many_size), sizes.conns
    else:
        rels, conns = data.many(sizes.tiny_n, sizes.tiny_size), sizes.conns
    srv = StaticServer(data.root, work / "server").start()
    scratch = work / "runs" / f"profile-{args.case}"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "dest").mkdir(parents=True)
    urls = scratch / "urls.txt"
    urls.write_text("\n".join(f"{srv.base_url}/{r}" for r in rels) + "\n")
    spec = {
        "peer": "ipybgfetch",
        "urls_file": str(urls),
        "dest": str(scratch / "dest"),
        "home": str(scratch / "home"),
        "conns": conns,
        "variant": json.loads(args.variant),
    }
    outdir = HERE / "profiles"
    outdir.mkdir(exist_ok=True)
    tag = (
        f"case{args.case}{'-native' if args.native else ''}{'-' + args.label if args.label else ''}"
    )
    raw = outdir / f"{tag}.txt"
    cmd = ["py-spy", "record", "--format", "raw", "--threads", "-r", str(args.rate)]
    cmd += ["-o", str(raw)] + (["--native"] if args.native else [])
    cmd += ["--nolineno"] if args.nolines else []
    cmd += ["--", sys.executable, str(BENCH / "_worker.py"), json.dumps(spec)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        srv.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), "")
    print(line or res.stdout[-2000:] + res.stderr[-2000:])
    report = analyze(raw) + "\n" + boundaries(raw)
    (outdir / f"{tag}.summary.txt").write_text(line + "\n" + report + "\n")
    print(report)


if __name__ == "__main__":
    main()
