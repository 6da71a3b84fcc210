// The widget: a registration panel or the manager view, plus an error banner, driven by
// an anywidget model (get/on/off/send).
import { CLS, h, setAttr, setHidden, setText } from "./dom.js";
import { isNumber } from "./format.js";
import { createManagerView } from "./manager.js";
import { createPanel } from "./registration.js";

/**
 * The part of an anywidget model the panel uses.
 * @typedef {object} Model
 * @property {(name: string) => any} get
 * @property {(event: string, cb: (...args: any[]) => void) => void} on
 * @property {(event: string, cb: (...args: any[]) => void) => void} off
 * @property {(msg: any) => void} send
 */

/**
 * @typedef {object} MountOptions
 * @property {(fn: () => void) => void} [schedule] when to render after a change
 * @property {number} [slowIntentMs]
 */

export const STALE_MESSAGE =
  "This panel lost its kernel (restarted or shut down), so its buttons no longer work. " +
  "Run the cell again, or %bgfetch, for a live panel: downloads resume in the new kernel.";
/** The short reason shown beside the disabled controls of a panel whose kernel is gone. */
export const STALE_REASON = "Kernel gone: these controls no longer reach it.";

/** @param {() => void} fn */
function defaultSchedule(fn) {
  if (typeof requestAnimationFrame === "function") {
    // rAF coalesces bursts and pauses in hidden tabs; the timeout is a safety net for
    // hosts that never paint (a hidden VS Code webview still gets the state later).
    let done = false;
    const run = () => {
      if (!done) {
        done = true;
        fn();
      }
    };
    requestAnimationFrame(run);
    setTimeout(run, 250);
    return;
  }
  setTimeout(fn, 0);
}

/**
 * Mount the widget into `el`, driven by `model`.
 * Returns the cleanup function anywidget expects from render().
 * @param {Model} model
 * @param {HTMLElement} el
 * @param {MountOptions} [options]
 * @returns {() => void}
 */
export function mount(model, el, options = {}) {
  const doc = el.ownerDocument;
  const schedule = options.schedule ?? defaultSchedule;
  const root = h(doc, "div", `${CLS}-root`);
  const banner = h(doc, "div", `${CLS}-error`);
  banner.setAttribute("role", "alert");
  banner.hidden = true;
  root.appendChild(banner);
  el.appendChild(root);

  /** @type {"manager" | "registration" | null} */
  let mode = null;
  /** @type {import("./manager.js").ManagerView | import("./registration.js").Panel | null} */
  let view = null;
  let queued = false;
  let alive = true;
  let stale = false; // the kernel side is gone: buttons can no longer reach it

  // A panel displayed before a kernel restart keeps its last state, but its comm is
  // closed: model.send() throws. Say so instead of failing silently, and stop offering
  // buttons that cannot work.
  /** @type {import("./intents.js").Send} */
  const send = (msg) => {
    if (stale) return false;
    try {
      model.send(msg);
      return true;
    } catch {
      markStale();
      return false;
    }
  };

  // ipywidgets marks a model's comm dead when its kernel restarts or shuts down
  // ("comm_live_update" then, "comm:close" when the kernel closes it): say so at once.
  function markStale() {
    if (!alive || stale) return;
    stale = true;
    showStale();
  }

  function showStale() {
    setText(banner, STALE_MESSAGE);
    setHidden(banner, false);
    setAttr(root, "data-stale", "true");
    view?.setDisabled(STALE_REASON);
    for (const b of root.querySelectorAll("button")) b.disabled = true;
  }

  function render() {
    queued = false;
    if (!alive) return;
    const nextMode = model.get("mode") === "manager" ? "manager" : "registration";
    if (nextMode !== mode || view === null) {
      if (view) view.destroy();
      view = nextMode === "manager" ? createManagerView(doc, send, options) : createPanel(doc, send, options);
      if (stale) view.setDisabled(STALE_REASON);
      root.appendChild(view.el);
      mode = nextMode;
    }
    const ack = model.get("ack");
    view.update(mode === "manager" ? model.get("registrations") : model.get("state"), isNumber(ack) ? ack : 0);
    if (stale) {
      showStale();
      return;
    }
    const error = model.get("error");
    setText(banner, error ? String(error) : "");
    setHidden(banner, !error);
  }

  function request() {
    if (queued || !alive) return;
    queued = true;
    schedule(render);
  }

  const events = ["change:state", "change:registrations", "change:mode", "change:error", "change:ack"];
  for (const ev of events) model.on(ev, request);
  const lifecycle = ["comm_live_update", "comm:close"];
  for (const ev of lifecycle) model.on(ev, markStale);
  render();

  return () => {
    alive = false;
    for (const ev of events) model.off(ev, request);
    for (const ev of lifecycle) model.off(ev, markStale);
    if (view) view.destroy();
    root.remove();
  };
}
