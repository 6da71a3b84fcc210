"""Live progress in a terminal (issue 16): terminal IPython and plain Python under a real
pseudo-terminal (the ``pty`` module) show one updating line while ``%bgfetch wait`` /
``reg.wait()`` block; the same script with its output in a pipe prints no progress."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pty is POSIX only")


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["IPYBGFETCH_HOME"] = str(home)
    env.pop("IPYBGFETCH_PROGRESS", None)
    env["TERM"] = "xterm"
    return env


def _run_in_pty(
    argv: list[str],
    env: dict[str, str],
    stdin: str,
    until: str,
    timeout: float,
    replies: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> str:
    """Run ``argv`` with a pseudo-terminal as its stdin/stdout/stderr, type ``stdin``, and
    read everything it writes until ``until`` appears (or the process ends). ``replies``:
    (text, keys) pairs, in order: type the keys once the text has appeared."""
    replies = list(replies)
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""
    try:
        os.write(master, stdin.encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                if replies and replies[0][0].encode() in out:
                    keys = replies.pop(0)[1]
                    if keys == "\x03":  # Ctrl-C: the terminal sends its foreground SIGINT
                        proc.send_signal(signal.SIGINT)  # (the child has no controlling tty)
                    else:
                        os.write(master, keys.encode())
                if until.encode() in out:  # and what follows on the same line
                    deadline = min(deadline, time.monotonic() + 0.5)
                    until = "\x00never"
            elif proc.poll() is not None:
                break
    finally:
        try:
            os.write(master, b"exit()\n")
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(master)
    return out.decode("utf-8", "replace")


def _frames(text: str, reg_id: str) -> list[str]:
    """The progress lines drawn for ``reg_id`` (each redraw starts with a carriage return)."""
    return [f for f in re.split(r"[\r\n]", text) if f.startswith(f"{reg_id}: ")]


def test_terminal_ipython_shows_live_progress_during_bgfetch_wait(tmp_path: Path) -> None:
    pytest.importorskip("IPython")
    code = (
        "%load_ext ipybgfetch\n"
        "from ipybgfetch.testing import DataServer\n"
        "srv = DataServer().start()\n"
        "import ipybgfetch\n"
        "reg = ipybgfetch.manager().fetch('tty', srv.url('t.bin', 3_000_000, throttle=1_000_000))\n"
        "%bgfetch wait tty\n"
    )
    argv = [sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner", "--colors=NoColor"]
    text = _run_in_pty(argv, _env(tmp_path / "home"), code, until="Done: 'tty'", timeout=60)
    assert "Done: 'tty': success" in text, text[-2000:]
    frames = _frames(text, "tty")
    assert len(frames) >= 5, text[-2000:]  # several updates during ~3 s
    assert any("/s" in f and "0/1 files" in f for f in frames), frames
    assert any("ETA 0:0" in f for f in frames), frames
    assert frames[-1].startswith("tty: 2.9 MiB / 2.9 MiB (100%)  1/1 files  success")
    sizes = {f.split("  ")[0] for f in frames}
    assert len(sizes) >= 4  # the byte count moved between redraws


def test_plain_python_progress_only_on_a_terminal(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "import ipybgfetch\n"
        "from ipybgfetch.testing import DataServer\n"
        "with DataServer() as srv:\n"
        "    mgr = ipybgfetch.BackgroundFetchManager(home={!r})\n"
        "    reg = mgr.fetch('plain', srv.url('p.bin', 1_500_000, throttle=1_000_000))\n"
        "    reg.wait(30)\n"
        "    print('RESULT', reg.result)\n"
        "    mgr.close()\n".format(str(tmp_path / "home"))
    )
    env = _env(tmp_path / "home")
    text = _run_in_pty([sys.executable, str(script)], env, "", until="RESULT success", timeout=60)
    assert "RESULT success" in text
    assert len(_frames(text, "plain")) >= 3, text
    piped = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() == "RESULT success"
    assert "plain:" not in piped.stderr and "\r" not in piped.stderr


def test_ctrl_c_during_bgfetch_wait_says_one_line(tmp_path: Path) -> None:
    pytest.importorskip("IPython")
    code = (
        "%load_ext ipybgfetch\n"
        "from ipybgfetch.testing import DataServer\n"
        "srv = DataServer().start()\n"
        "import ipybgfetch\n"
        "reg = ipybgfetch.manager().fetch('cc', srv.url('c.bin', 9_000_000, throttle=1_000_000))\n"
        "%bgfetch wait cc\n"
    )
    argv = [sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner", "--colors=NoColor"]
    replies = [("cc: 1", "\x03"), ("keeps downloading", "print('STATE', reg.state)\n")]
    text = _run_in_pty(
        argv, _env(tmp_path / "home"), code, until="STATE a", timeout=60, replies=replies
    )
    assert "stopped waiting; 'cc' keeps downloading in the background" in text, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert "STATE active" in text  # only the waiting stopped
