// The manager view: one registration panel per registration, newest first, bounded.
import { CLS, h, setHidden, setText } from "./dom.js";
import { formatCount } from "./format.js";
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
  const heading = h(doc, "div", `${CLS}-manager-heading`, "Background fetches");
  const empty = h(doc, "div", `${CLS}-empty`, "No background fetches yet.");
  const list = h(doc, "div", `${CLS}-list`);
  list.setAttribute("role", "list");
  const more = h(doc, "div", `${CLS}-more`);
  more.hidden = true;
  root.append(heading, empty, list, more);
  /** @type {ManagerView["panels"]} key -> {panel, item} */
  const panels = new Map();
  let disabledReason = "";

  /**
   * @param {unknown} registrations oldest first (like manager.registrations())
   * @param {number} [ack]
   */
  function update(registrations, ack) {
    /** @type {MaybeSnapshot[]} */
    const regs = Array.isArray(registrations) ? registrations : [];
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
        const panel = createPanel(doc, send, options);
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
  }

  /** @param {string} reason */
  function setDisabled(reason) {
    disabledReason = reason ? String(reason) : "";
    for (const entry of panels.values()) entry.panel.setDisabled(disabledReason);
  }

  function destroy() {
    for (const entry of panels.values()) entry.panel.destroy();
    panels.clear();
    root.remove();
  }

  return { el: root, update, setDisabled, destroy, panels };
}
