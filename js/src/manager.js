// The manager view: one registration panel per registration, newest first, bounded.
import { CLS, h, setAttr, setHidden, setText } from "./dom.js";
import { formatCount, isNumber, isSettled } from "./format.js";
import { PENDING_WORDS, nextSeq } from "./intents.js";
import { createPanel } from "./registration.js";

/** @typedef {import("./format.js").MaybeSnapshot} MaybeSnapshot */

export const MAX_PANELS = 100;

/**
 * A stable key for a registration's panel: its object key, else id + start time.
 * @param {MaybeSnapshot} snap
 * @param {number} position
 */
export function registrationKey(snap, position) {
  if (snap?.key !== undefined && snap?.key !== null) return `k:${snap.key}`;
  if (snap?.id !== undefined) return `i:${snap.id}:${snap.started ?? ""}`;
  return `p:${position}`;
}

/**
 * @typedef {object} ManagerView
 * @property {HTMLElement} el
 * @property {(registrations: unknown, ack?: number) => void} update
 * @property {(reason: string) => void} setDisabled
 * @property {() => void} destroy
 * @property {Map<string, {item: HTMLDivElement, panel: import("./registration.js").Panel}>} panels
 * @property {HTMLButtonElement} clear the "Clear finished" button
 */

/**
 * @param {Document} doc
 * @param {import("./intents.js").Send} send
 * @param {import("./registration.js").PanelOptions} [options]
 * @returns {ManagerView}
 */
export function createManagerView(doc, send, options = {}) {
  const root = h(doc, "section", `${CLS}-manager`);
  root.setAttribute("aria-label", "Background fetches");
  const head = h(doc, "div", `${CLS}-manager-head`);
  const heading = h(doc, "div", `${CLS}-manager-heading`, "Background fetches");
  // Hides the settled registrations from this list; nothing is deleted.
  const clear = h(doc, "button", `${CLS}-button ${CLS}-clear`, "Clear finished");
  clear.type = "button";
  clear.hidden = true;
  clear.title = "Hide finished downloads from this list (their files stay)";
  head.append(heading, clear);
  const empty = h(doc, "div", `${CLS}-empty`, "No background fetches yet.");
  const list = h(doc, "div", `${CLS}-list`);
  list.setAttribute("role", "list");
  const more = h(doc, "div", `${CLS}-more`);
  more.hidden = true;
  root.append(head, empty, list, more);
  /** @type {ManagerView["panels"]} key -> {panel, item} */
  const panels = new Map();
  let disabledReason = "";
  /** @type {number | null} the seq of a "clear" not yet acked */
  let clearing = null;
  let lastAck = 0;
  let anySettled = false;
  const panelOptions = { ...options, collapseSettled: true };

  clear.addEventListener("click", () => {
    if (clearing !== null || disabledReason) return;
    const seq = nextSeq();
    if (send({ type: "clear", id: "", seq }) === false) return;
    clearing = seq;
    refreshClear();
  });

  function refreshClear() {
    if (clearing !== null && lastAck >= clearing) clearing = null;
    setHidden(clear, !anySettled && clearing === null);
    clear.disabled = clearing !== null || Boolean(disabledReason);
    setText(clear, clearing !== null ? PENDING_WORDS.clear : "Clear finished");
    setAttr(clear, "aria-busy", clearing !== null ? "true" : null);
  }

  /**
   * @param {unknown} registrations oldest first (like manager.registrations())
   * @param {number} [ack]
   */
  function update(registrations, ack) {
    /** @type {MaybeSnapshot[]} */
    const regs = Array.isArray(registrations) ? registrations : [];
    if (isNumber(ack) && ack > lastAck) lastAck = ack;
    const total = regs.length;
    const shown = Math.min(total, MAX_PANELS);
    setText(heading, `Background fetches (${formatCount(total)})`);
    setHidden(empty, total > 0);
    setHidden(more, total <= shown);
    if (total > shown) setText(more, `and ${formatCount(total - shown)} older, not shown`);
    /** @type {Set<string>} */
    const seen = new Set();
    // Registrations arrive oldest first; show newest first.
    for (let i = 0; i < shown; i++) {
      const pos = total - 1 - i;
      const snap = regs[pos];
      let key = registrationKey(snap, pos);
      if (seen.has(key)) key = `p:${pos}`;
      seen.add(key);
      let entry = panels.get(key);
      if (!entry) {
        const item = h(doc, "div", `${CLS}-item`);
        item.setAttribute("role", "listitem");
        const panel = createPanel(doc, send, panelOptions);
        if (disabledReason) panel.setDisabled(disabledReason);
        item.appendChild(panel.el);
        entry = { item, panel };
        panels.set(key, entry);
      }
      entry.panel.update(snap, ack);
      const at = list.children[i];
      if (at !== entry.item) list.insertBefore(entry.item, at ?? null);
    }
    for (const [key, entry] of panels) {
      if (!seen.has(key)) {
        entry.panel.destroy();
        entry.item.remove();
        panels.delete(key);
      }
    }
    anySettled = regs.some((snap) => isSettled(snap));
    refreshClear();
  }

  /** @param {string} reason */
  function setDisabled(reason) {
    disabledReason = reason ? String(reason) : "";
    for (const entry of panels.values()) entry.panel.setDisabled(disabledReason);
    if (disabledReason) clearing = null;
    refreshClear();
  }

  function destroy() {
    for (const entry of panels.values()) entry.panel.destroy();
    panels.clear();
    root.remove();
  }

  return { el: root, update, setDisabled, destroy, panels, clear };
}
