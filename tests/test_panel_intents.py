"""The panel's intents (pause, resume, abort, click) while another cell keeps the kernel busy.

Issue #13. JupyterLab >= 4.4 and Notebook >= 7.4 send comm messages to a kernel subshell;
ipykernel 7 would re-route them to the subshell of whoever last *published* on the comm
(the panel's progress, published under the main shell), so they waited behind the busy
cell. Here, against real kernels driven over ZMQ exactly as those front ends do it
(``create_subshell_request``, then ``comm_msg`` with ``subshell_id`` in its header):

- the routing rule itself, on ipykernel's own comm class (no kernel needed);
- ipykernel 7: each intent takes effect and reaches the panel within 1 s while the main
  shell runs ``time.sleep``, a CPU-bound loop or ``await asyncio.sleep``;
- 200 pause/resume intents in 2 s during a busy cell: no deadlock, a consistent final state;
- ipykernel 6 (no subshells): the intent waits for the cell and then takes effect.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_support import IPK6_KERNEL, KernelSession, available_kernels, kernel_env

from ipybgfetch._jupyter.widget import BackgroundFetchPanel, _route_intents_to_their_subshell
from ipybgfetch.testing import DataServer

pytestmark = pytest.mark.timeout(180)

# -- the routing rule (unit) ---------------------------------------------------------------

INTENT = {"method": "custom", "content": {"type": "pause", "id": "dl", "seq": 7}}


def test_intents_keep_the_front_ends_subshell_other_messages_route_as_ipykernel_says() -> None:
    comm_mod = pytest.importorskip("ipykernel.comm.comm")
    if not hasattr(comm_mod.BaseComm, "_reply_subshell_for"):
        pytest.skip("this ipykernel has no comm reply routing (ipykernel < 7)")
    comm = comm_mod.BaseComm(target_name="jupyter.widget", data={}, primary=True)
    widget = BackgroundFetchPanel(comm=comm)
    try:
        assert widget.comm is comm
        assert widget.intents_overtake_busy_cells is True
        # What publish_msg records after the panel published progress from a background
        # thread under the main shell's parent (subshell_id None): ipykernel's rule would
        # send every later message on this comm to the main shell.
        comm._reply_subshell_id = None
        assert comm._reply_subshell_for(INTENT, "front-end-subshell") == "front-end-subshell"
        for kind in ("pause", "resume", "abort", "click"):
            data = {"method": "custom", "content": {"type": kind, "id": "dl"}}
            assert comm._reply_subshell_for(data, "sub-2") == "sub-2", kind
        # A message sent without a subshell still goes to the main shell.
        assert comm._reply_subshell_for(INTENT, None) is None
        # Anything else on this comm is routed exactly as ipykernel decides.
        assert comm._reply_subshell_for({"method": "update", "state": {}}, "sub-3") is None
        other = {"method": "custom", "content": {"type": "__class__", "id": "dl"}}
        assert comm._reply_subshell_for(other, "sub-4") is None
        comm._reply_subshell_id = "sub-5"
        assert comm._reply_subshell_for({"method": "request_state"}, None) == "sub-5"
    finally:
        widget.close()


def test_other_comms_are_untouched_and_a_comm_without_the_hook_is_left_alone() -> None:
    comm_mod = pytest.importorskip("ipykernel.comm.comm")
    if not hasattr(comm_mod.BaseComm, "_reply_subshell_for"):
        pytest.skip("this ipykernel has no comm reply routing (ipykernel < 7)")
    ours = comm_mod.BaseComm(target_name="jupyter.widget", data={}, primary=True)
    theirs = comm_mod.BaseComm(target_name="jupyter.widget", data={}, primary=True)
    widget = BackgroundFetchPanel(comm=ours)
    try:
        theirs._reply_subshell_id = None
        assert theirs._reply_subshell_for(INTENT, "sub") is None  # not our comm: unchanged
        assert "_reply_subshell_for" not in vars(theirs)
        assert comm_mod.BaseComm._reply_subshell_for is not None  # the class is not patched
    finally:
        widget.close()

    class NoHook:  # ipykernel 6's comm, ipywidgets' DummyComm, ...
        pass

    bare = NoHook()
    assert _route_intents_to_their_subshell(bare) is False
    assert vars(bare) == {}


def test_the_panel_of_a_registration_another_process_downloads_controls_it(
    tmp_path: Path, server: DataServer
) -> None:
    # Its buttons are not disabled: pause and abort from this panel reach the owner
    # through the store (the owner answers within ~0.25 s), and no error is shown.
    import ipybgfetch
    from ipybgfetch._jupyter.widget import manager_panel, registration_panel

    home = tmp_path / "home"
    url = server.url(
        "owned.bin", 5_000_000, throttle=500_000, ignore_range=True, tag=str(time.time())
    )
    with ipybgfetch.BackgroundFetchManager(home=home) as owner:
        reg = owner.fetch("owned", url)
        with ipybgfetch.BackgroundFetchManager(home=home) as viewer:
            mirror = viewer.get("owned")
            assert mirror is not None and mirror.read_only
            panel = registration_panel(mirror)
            listing = manager_panel(viewer)
            try:
                assert "controls_disabled" not in panel.state
                assert all("controls_disabled" not in s for s in listing.registrations)
                _deliver(panel, type="pause", id="owned", seq=5)
                assert (panel.ack, panel.error) == (5, "")
                assert reg.state == "paused"  # the owner's registration
                _deliver(
                    listing, type="abort", id="owned", key=listing.registrations[0]["key"], seq=6
                )
                assert (listing.ack, listing.error) == (6, "")
                reg.wait(10)
                assert (reg.result, reg.failure_reason) == ("failure", "aborted")
            finally:
                for w in (panel, listing):
                    w.close()


def _deliver(widget: BackgroundFetchPanel, **content: Any) -> None:
    """An intent as the front end's model.send() delivers it."""
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


# -- real kernels -----------------------------------------------------------------------------

SETUP = """\
import asyncio, time
import ipybgfetch
from ipybgfetch._jupyter.widget import registration_panel
mgr = ipybgfetch.BackgroundFetchManager(home={home!r})
clicks = []
mgr.add_event_listener("backgroundfetchclick", lambda e: clicks.append(e.registration.id))
"""

BUSY = {
    "sleep": "time.sleep({s})",
    "cpu": "_t = time.monotonic()\nwhile time.monotonic() - _t < {s}:\n    sum(range(1000))",
    "await": "await asyncio.sleep({s})",
}


class Panel:
    """The kernel side of one panel, driven as JupyterLab drives it."""

    def __init__(self, ks: KernelSession, name: str, url: str) -> None:
        self.ks = ks
        self.name = name
        cell = ks.run(
            f"{name} = mgr.fetch({name!r}, [{url!r}], title={name!r})\n"
            f"_w = registration_panel({name})\nprint(_w.comm.comm_id)"
        )
        self.comm_id = cell.stdout.strip().splitlines()[-1]
        self.seq = 0

    def send(self, kind: str, subshell_id: str | None) -> int:
        self.seq += 1
        content = {"type": kind, "id": self.name, "seq": self.seq}
        send_shell(
            self.ks,
            "comm_msg",
            {"comm_id": self.comm_id, "data": {"method": "custom", "content": content}},
            subshell_id,
        )
        return self.seq

    def updates(self) -> list[dict[str, Any]]:
        """The panel's state updates, oldest first (``state`` and ``ack`` as they arrived)."""
        self.ks.drain(quiet=0.05, limit=0.5)
        msgs = [
            m
            for ms in list(self.ks.iopub.values())
            for m in ms
            if m["msg_type"] == "comm_msg"
            and m["content"].get("comm_id") == self.comm_id
            and m["content"]["data"].get("method") == "update"
        ]
        msgs.sort(key=lambda m: m["header"]["date"])
        return [m["content"]["data"]["state"] for m in msgs]

    def wait_for(self, pred: Any, timeout: float) -> tuple[float, dict[str, Any]]:
        """Until the merged panel state satisfies ``pred``; (seconds it took, state)."""
        t0 = time.monotonic()
        while True:
            merged: dict[str, Any] = {}
            for update in self.updates():
                merged.update(update)
                if pred(merged):
                    return time.monotonic() - t0, merged
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"panel never reached the state; last: {_brief(merged)}")
            time.sleep(0.02)


def _brief(merged: dict[str, Any]) -> dict[str, Any]:
    state = merged.get("state") or {}
    return {"state": state.get("state"), "ack": merged.get("ack"), "error": merged.get("error")}


def send_shell(
    ks: KernelSession, msg_type: str, content: dict[str, Any], subshell_id: str | None = None
) -> str:
    msg = ks.kc.session.msg(msg_type, content)
    if subshell_id is not None:
        msg["header"]["subshell_id"] = subshell_id
    ks.kc.shell_channel.send(msg)
    return str(msg["header"]["msg_id"])


def shell_reply(ks: KernelSession, msg_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while msg_id not in ks.replies:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no shell reply to {msg_id}")
        ks._pump_shell(timeout=0.05)
    return ks.replies[msg_id]


def create_subshell(ks: KernelSession) -> str:
    """What JupyterLab does for comm targets when the kernel supports subshells."""
    msg = ks.kc.session.msg("create_subshell_request", {})
    ks.kc.control_channel.send(msg)
    deadline = time.monotonic() + 10
    while True:
        reply = ks.kc.get_control_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            break
    assert reply["content"]["status"] == "ok", reply["content"]
    return str(reply["content"]["subshell_id"])


def run_on(ks: KernelSession, code: str, subshell_id: str, timeout: float = 10) -> str:
    """Run ``code`` on a subshell (concurrently with the main shell); its stdout."""
    msg_id = send_shell(
        ks,
        "execute_request",
        {"code": code, "silent": False, "store_history": False, "allow_stdin": False},
        subshell_id,
    )
    reply = shell_reply(ks, msg_id, timeout)
    assert reply["content"]["status"] == "ok", reply["content"]
    ks.drain(quiet=0.05, limit=1)
    return "".join(
        m["content"]["text"]
        for m in ks.iopub[msg_id]
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )


@pytest.fixture(scope="module")
def ipk7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelSession]:
    home = tmp_path_factory.mktemp("intents-home")
    ks = KernelSession("python3", cwd=home, env=kernel_env(home))
    try:
        ks.run(SETUP.format(home=str(home)))
        features = ks.run(
            "import ipykernel; print(ipykernel.__version__.split('.')[0])"
        ).stdout.strip()
        if int(features) < 7:
            pytest.skip("the python3 kernel is not ipykernel >= 7 (no subshells)")
        yield ks
    finally:
        ks.shutdown()


@pytest.mark.kernel
@pytest.mark.parametrize("busy", sorted(BUSY))
def test_intents_take_effect_within_1s_while_a_cell_is_busy(
    ipk7: KernelSession, server: DataServer, busy: str
) -> None:
    ks = ipk7
    sub = create_subshell(ks)
    url = server.url(
        f"busy-{busy}.bin", 40_000_000, throttle=1_000_000, ignore_range=True, tag=str(time.time())
    )
    panel = Panel(ks, f"busy_{busy}", url)
    panel.wait_for(lambda m: (m.get("state") or {}).get("downloaded", 0) > 0, 10)
    cell = ks.submit(BUSY[busy].format(s=12))
    ks.wait_started(cell)
    time.sleep(0.3)  # the busy cell is running; progress keeps being published meanwhile
    checks = []
    for kind, want in (("pause", "paused"), ("resume", "active"), ("click", None)):
        seq = panel.send(kind, sub)
        took, merged = panel.wait_for(lambda m, s=seq: m.get("ack", 0) >= s, 5)
        assert took < 1.0, f"{kind} took {took:.2f} s during {busy}"
        if want is not None:
            assert merged["state"]["state"] == want, _brief(merged)
        # The kernel-side state matches, read on the subshell while the cell still runs.
        if kind == "click":
            seen = run_on(ks, f"time.sleep(0.3); print(clicks.count({panel.name!r}))", sub)
            assert seen.strip() == "1"
        else:
            assert run_on(ks, f"print({panel.name}.state)", sub).strip() == want
        checks.append((kind, round(took, 3)))
    seq = panel.send("abort", sub)
    took, merged = panel.wait_for(lambda m, s=seq: m.get("ack", 0) >= s, 5)
    assert took < 1.0
    assert merged["state"]["state"] == "aborted"
    assert merged.get("error", "") == ""
    state = run_on(ks, f"print({panel.name}.result, {panel.name}.failure_reason)", sub)
    assert state.split() == ["failure", "aborted"]
    assert cell.reply is None, "the busy cell ended before the checks: they proved nothing"
    ks.interrupt()  # done: end the busy cell early
    ks.wait(cell, timeout=30)
    print(busy, checks)


@pytest.mark.kernel
def test_200_pause_resume_intents_in_2s_during_a_busy_cell_stay_consistent(
    ipk7: KernelSession, server: DataServer
) -> None:
    ks = ipk7
    sub = create_subshell(ks)
    url = server.url(
        "stress.bin", 60_000_000, throttle=2_000_000, ignore_range=True, tag=str(time.time())
    )
    panel = Panel(ks, "stress", url)
    panel.wait_for(lambda m: (m.get("state") or {}).get("downloaded", 0) > 0, 10)
    cell = ks.submit("time.sleep(15)")
    ks.wait_started(cell)
    t0 = time.monotonic()
    last = 0
    for i in range(200):
        last = panel.send("pause" if i % 2 == 0 else "resume", sub)
        time.sleep(max(0.0, t0 + (i + 1) * 0.01 - time.monotonic()))
    sent_in = time.monotonic() - t0
    assert sent_in < 2.5
    took, merged = panel.wait_for(lambda m: m.get("ack", 0) >= last, 20)
    assert merged.get("error", "") == "", merged["error"]
    # The last intent was a resume: the registration, the panel and the engine agree.
    ks.drain(quiet=0.3, limit=2)
    final = {}
    for update in panel.updates():
        final.update(update)
    assert final["state"]["state"] == "active", _brief(final)
    kernel_side = run_on(ks, "print(stress.state, stress.downloaded)", sub).split()
    assert kernel_side[0] == "active"
    before = int(kernel_side[1])
    time.sleep(1.0)
    after = int(run_on(ks, "print(stress.downloaded)", sub).strip())
    assert after > before, "resumed, yet no bytes arrive"
    # One more pause lands too (the handler is not wedged), then abort to finish.
    seq = panel.send("pause", sub)
    panel.wait_for(lambda m: m.get("ack", 0) >= seq and m["state"]["state"] == "paused", 5)
    assert run_on(ks, "print(stress.state)", sub).strip() == "paused"
    # An intent that fails on the subshell thread is shown in the panel, not lost there.
    seq = panel.send("retry", sub)  # retry() of an unsettled registration raises
    _, merged = panel.wait_for(lambda m: m.get("ack", 0) >= seq, 5)
    assert merged["error"].startswith("retry failed: InvalidStateError"), merged.get("error")
    assert cell.reply is None, "the busy cell ended before the checks"
    ks.interrupt()  # end the busy cell early
    ks.wait(cell, timeout=30)  # no deadlock: the main shell finishes its cell...
    done = ks.run("print(stress.abort(), stress.state)")  # ...and runs the next one
    assert done.stdout.split() == ["True", "aborted"]
    print(f"200 intents sent in {sent_in:.2f} s, all acked {took:.2f} s later")


@pytest.mark.kernel
@pytest.mark.skipif(
    IPK6_KERNEL not in available_kernels(),
    reason=f"the ipykernel 6 kernelspec {IPK6_KERNEL!r} is not installed (.ci/kernels.sh)",
)
def test_ipykernel6_intent_waits_for_the_busy_cell_then_takes_effect(
    tmp_path: Path, server: DataServer
) -> None:
    ks = KernelSession(IPK6_KERNEL, cwd=tmp_path, env=kernel_env(tmp_path))
    try:
        ks.run(SETUP.format(home=str(tmp_path / "home")))
        url = server.url(
            "ipk6.bin", 40_000_000, throttle=1_000_000, ignore_range=True, tag=str(time.time())
        )
        panel = Panel(ks, "old", url)
        panel.wait_for(lambda m: (m.get("state") or {}).get("downloaded", 0) > 0, 10)
        cell = ks.submit("time.sleep(4)")
        ks.wait_started(cell)
        seq = panel.send("pause", None)  # no subshells on ipykernel 6
        time.sleep(2.0)
        merged: dict[str, Any] = {}
        for update in panel.updates():
            merged.update(update)
        assert merged.get("ack", 0) < seq, "ipykernel 6 handled an intent during a busy cell?"
        assert merged["state"]["state"] == "active"
        ks.wait(cell, timeout=30)
        _, merged = panel.wait_for(lambda m: m.get("ack", 0) >= seq, 10)
        assert merged["state"]["state"] == "paused"
        assert ks.run("print(old.state)").stdout.strip() == "paused"
        ks.run("old.abort()")
    finally:
        ks.shutdown()
