// One registration's panel: header (icon, title, badge, buttons), a notice line, the
// progress bar, the stats line and the records table. Built once, updated in place.
import { CLS, h, setAttr, setBar, setHidden, setText } from "./dom.js";
import {
  DASH,
  bytesText,
  formatAgo,
  formatBytes,
  formatDuration,
  formatEta,
  formatSpeed,
  isNumber,
  isSettled,
  pickIcon,
  progressInfo,
  recordsText,
  stateLabel,
} from "./format.js";
import { PENDING_WORDS, SLOW_INTENT_MS, intentCode, nextSeq, slowIntentText } from "./intents.js";
import { createRecordList } from "./records.js";
import { createWorkerList } from "./workers.js";

/** @typedef {import("./format.js").MaybeSnapshot} MaybeSnapshot */
/** @typedef {import("./intents.js").IntentType} IntentType */
/** @typedef {import("./intents.js").ButtonIntent} ButtonIntent */
/** @typedef {import("./intents.js").Send} Send */

/**
 * @typedef {object} PanelOptions
 * @property {number} [slowIntentMs] after this long without an ack, explain the wait
 * @property {boolean} [collapseSettled] a settled registration shows its header only,
 *   with a "Details" toggle (the manager's list)
 * @property {() => number} [now] the clock, in ms since the epoch (tests)
 * @property {(text: string) => Promise<void>} [copy] writes to the clipboard (tests)
 */

/**
 * @typedef {object} Pending an intent sent and not yet confirmed
 * @property {IntentType} type
 * @property {number} seq
 * @property {unknown} state the registration's state when it was sent
 * @property {boolean} slow unconfirmed for longer than slowIntentMs
 * @property {ReturnType<typeof setTimeout> | null} timer
 */

/**
 * @typedef {object} Panel
 * @property {HTMLElement} el
 * @property {(snap: MaybeSnapshot, ack?: number) => void} update
 * @property {(reason: string) => void} setDisabled the kernel is gone ("" to lift)
 * @property {() => void} destroy
 * @property {import("./records.js").RecordList} records
 * @property {Record<ButtonIntent, HTMLButtonElement>} buttons
 * @property {HTMLButtonElement} title
 * @property {HTMLDivElement} bar
 * @property {HTMLDivElement} notice
 * @property {HTMLButtonElement} copy
 * @property {HTMLButtonElement} expand
 */

/** @type {ReadonlyArray<[ButtonIntent, string]>} */
const BUTTONS = [
  ["pause", "Pause"],
  ["resume", "Resume"],
  ["retry", "Retry failed"],
  ["abort", "Abort"],
];

/**
 * Write `text` to the clipboard: the async API where the page may use it, else a
 * selected textarea and execCommand("copy").
 * @param {Document} doc
 * @param {string} text
 * @returns {Promise<void>}
 */
async function copyText(doc, text) {
  const clip = doc.defaultView?.navigator?.clipboard;
  if (clip && typeof clip.writeText === "function") {
    try {
      await clip.writeText(text);
      return;
    } catch {
      // not allowed here (an insecure context, a sandboxed frame): the old way
    }
  }
  const area = doc.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  doc.body.appendChild(area);
  area.select();
  const ok = doc.execCommand?.("copy");
  area.remove();
  if (!ok) throw new Error("copy is not allowed here");
}

/**
 * Build a panel. `send(msg)` receives {type, id, key, seq} and returns false when the
 * message cannot be delivered.
 * @param {Document} doc
 * @param {Send} send
 * @param {PanelOptions} [options]
 * @returns {Panel}
 */
export function createPanel(doc, send, options = {}) {
  const slowMs = options.slowIntentMs ?? SLOW_INTENT_MS;
  const now = options.now ?? (() => Date.now());
  const copy = options.copy ?? ((text) => copyText(doc, text));
  const root = h(doc, "section", `${CLS}-panel`);
  root.setAttribute("aria-label", "Background fetch");

  const header = h(doc, "div", `${CLS}-header`);
  const icon = h(doc, "img", `${CLS}-icon`);
  icon.hidden = true;
  icon.width = 32;
  icon.height = 32;
  icon.decoding = "async";
  icon.referrerPolicy = "no-referrer";
  icon.addEventListener("error", () => {
    icon.hidden = true;
  });
  const titleBox = h(doc, "div", `${CLS}-titlebox`);
  const title = h(doc, "button", `${CLS}-title`);
  title.type = "button";
  title.title = "Fire the backgroundfetchclick event";
  const idLine = h(doc, "span", `${CLS}-id`);
  titleBox.append(title, idLine);
  const badge = h(doc, "span", `${CLS}-badge`);
  badge.setAttribute("role", "status");
  const actions = h(doc, "div", `${CLS}-actions`);
  const buttons = /** @type {Record<ButtonIntent, HTMLButtonElement>} */ ({});
  for (const [type, label] of BUTTONS) {
    const b = h(doc, "button", `${CLS}-button ${CLS}-${type}`, label);
    b.type = "button";
    b.dataset.action = type;
    buttons[type] = b;
    actions.appendChild(b);
  }
  // In the manager's list a settled registration is folded to its header.
  const expand = h(doc, "button", `${CLS}-button ${CLS}-expand`, "Details");
  expand.type = "button";
  expand.hidden = true;
  expand.setAttribute("aria-expanded", "false");
  let expanded = false;
  expand.addEventListener("click", () => {
    expanded = !expanded;
    layout();
  });
  header.append(icon, titleBox, badge, actions, expand);

  // Why the buttons wait or do not work: a busy kernel, another process, a lost kernel.
  const notice = h(doc, "div", `${CLS}-notice`);
  notice.setAttribute("role", "status");
  notice.hidden = true;
  const noticeText = h(doc, "span", `${CLS}-notice-text`);
  const noticeCode = h(doc, "code", `${CLS}-notice-code`);
  noticeCode.hidden = true;
  notice.append(noticeText, noticeCode);

  const bar = h(doc, "div", `${CLS}-bar`);
  bar.setAttribute("role", "progressbar");
  const fill = h(doc, "div", `${CLS}-bar-fill`);
  bar.appendChild(fill);

  const stats = h(doc, "div", `${CLS}-stats`);
  const bytes = h(doc, "span", `${CLS}-bytes`);
  const percent = h(doc, "span", `${CLS}-percent`);
  const speed = h(doc, "span", `${CLS}-speed`);
  const eta = h(doc, "span", `${CLS}-eta`);
  const recs = h(doc, "span", `${CLS}-recs`);
  const upload = h(doc, "span", `${CLS}-upload`);
  upload.hidden = true;
  stats.append(percent, bytes, speed, eta, recs, upload);

  // Where the files go, with a button that copies the path.
  const dest = h(doc, "div", `${CLS}-dest`);
  dest.hidden = true;
  const destLabel = h(doc, "span", `${CLS}-dest-label`, "Saved to");
  const destPath = h(doc, "code", `${CLS}-dest-path`);
  const copyButton = h(doc, "button", `${CLS}-button ${CLS}-copy`, "Copy path");
  copyButton.type = "button";
  const copyStatus = h(doc, "span", `${CLS}-copy-status`);
  copyStatus.setAttribute("role", "status");
  dest.append(destLabel, destPath, copyButton, copyStatus);
  /** @type {ReturnType<typeof setTimeout> | null} */
  let copyTimer = null;
  copyButton.addEventListener("click", () => {
    const path = String(snap.dest ?? "");
    if (!path) return;
    copy(path).then(
      () => setText(copyStatus, "Copied"),
      () => setText(copyStatus, "Copy failed: select the path and copy it"),
    );
    if (copyTimer !== null) clearTimeout(copyTimer);
    copyTimer = setTimeout(() => {
      copyTimer = null;
      setText(copyStatus, "");
    }, 2500);
    /** @type {any} */ (copyTimer)?.unref?.();
  });

  const records = createRecordList(doc);
  const workers = createWorkerList(doc);
  const body = [bar, stats, dest, records.el, workers.el];
  root.append(header, notice, ...body);

  /** @type {Partial<import("./vocab.js").Snapshot> & {controls_disabled?: string, retry_unavailable?: boolean}} */
  let snap = {};
  let ack = 0;
  let disabledReason = ""; // set from outside: the kernel is gone
  // Sent, not yet confirmed: one button intent and one title click at most.
  /** @type {Pending | null} */
  let pending = null;
  /** @type {Pending | null} */
  let clicked = null;

  /**
   * @param {Pending | null} entry
   * @returns {null}
   */
  function drop(entry) {
    if (entry?.timer) clearTimeout(entry.timer);
    return null;
  }

  /** @param {IntentType} type */
  function fire(type) {
    if (!snap.id || disabledReason) return;
    const isClick = type === "click";
    if (!isClick && (pending !== null || controlsDisabled())) return;
    const seq = nextSeq();
    /** @type {import("./intents.js").Intent} */
    const msg = { type, id: String(snap.id), seq };
    if (snap.key !== undefined) msg.key = snap.key;
    if (send(msg) === false) return; // not delivered: mount() says why and disables us
    /** @type {Pending} */
    const entry = { type, seq, state: snap.state, slow: false, timer: null };
    entry.timer = setTimeout(() => {
      entry.timer = null;
      entry.slow = true;
      refresh();
    }, slowMs);
    /** @type {any} */ (entry.timer)?.unref?.(); // node (tests): don't keep the process alive
    if (isClick) {
      drop(clicked);
      clicked = entry;
    } else {
      pending = entry;
    }
    refresh();
  }

  title.addEventListener("click", () => fire("click"));
  for (const [type] of BUTTONS) buttons[type].addEventListener("click", () => fire(type));

  function controlsDisabled() {
    return Boolean(snap.controls_disabled);
  }

  function layout() {
    const fold = Boolean(options.collapseSettled) && isSettled(snap);
    setHidden(expand, !fold);
    setText(expand, expanded ? "Hide details" : "Details");
    setAttr(expand, "aria-expanded", expanded ? "true" : "false");
    setAttr(root, "data-collapsed", fold && !expanded ? "true" : null);
    for (const part of body) setAttr(part, "data-folded", fold && !expanded ? "true" : null);
  }

  function settlePending() {
    // Confirmed: the kernel acked this intent (or a later one), or the state moved on.
    if (pending !== null && (ack >= pending.seq || snap.state !== pending.state)) pending = drop(pending);
    if (clicked !== null && ack >= clicked.seq) clicked = drop(clicked);
  }

  function refresh() {
    settlePending();
    const state = snap.state;
    const settled = isSettled(snap);
    const failed = isNumber(snap.records_failed) ? snap.records_failed : 0;
    /** @type {Record<ButtonIntent, boolean>} */
    const show = {
      pause: !settled && state === "active",
      resume: !settled && state === "paused",
      abort: !settled && (state === "active" || state === "paused" || state === "needs-credentials"),
      // reg.retry(): the failed (and aborted) records of a settled registration again
      retry: settled && snap.result === "failure" && failed > 0 && !snap.retry_unavailable,
    };
    const blocked = Boolean(disabledReason) || controlsDisabled();
    const anyButton = show.pause || show.resume || show.abort || show.retry;
    for (const [type, label] of BUTTONS) {
      const b = buttons[type];
      const mine = pending !== null && pending.type === type;
      setHidden(b, !show[type]);
      b.disabled = !show[type] || blocked || pending !== null;
      setText(b, mine ? PENDING_WORDS[type] : label);
      setAttr(b, "aria-busy", mine ? "true" : null);
    }
    setHidden(actions, !anyButton);
    title.disabled = Boolean(disabledReason);
    setAttr(title, "aria-busy", clicked ? "true" : null);
    setAttr(root, "data-pending", pending ? pending.type : clicked ? "click" : null);

    let text = "";
    let code = "";
    /** @type {string | null} */
    let kind = null;
    if (disabledReason) {
      text = disabledReason;
      kind = "stale";
    } else if (controlsDisabled() && anyButton) {
      text = String(snap.controls_disabled);
      kind = "disabled";
    } else {
      const slow = pending?.slow ? pending : clicked?.slow ? clicked : null;
      if (slow) {
        text = slowIntentText(slow.type);
        code = intentCode(slow.type, snap.id);
        if (code) text += " Or run in a new cell:";
        kind = "slow";
      }
    }
    setText(noticeText, text);
    setText(noticeCode, code);
    setHidden(noticeCode, !code);
    setHidden(notice, !text);
    setAttr(notice, "data-kind", kind);
  }

  /**
   * @param {MaybeSnapshot} next
   * @param {number} [nextAck] the newest intent seq the kernel carried out
   */
  function update(next, nextAck) {
    snap = next && typeof next === "object" ? next : {};
    if (isNumber(nextAck) && nextAck > ack) ack = nextAck;
    const name = String(snap.title || snap.id || "");
    const id = String(snap.id ?? "");
    const label = stateLabel(snap);
    setAttr(root, "data-state", String(snap.state ?? ""));
    setAttr(root, "data-tone", label.tone);
    setAttr(root, "aria-label", `Background fetch ${name}`);

    setText(title, name || "(no title)");
    const showId = Boolean(snap.title && id && snap.title !== id);
    setText(idLine, showId ? id : "");
    setHidden(idLine, !showId);

    const src = pickIcon(snap.icons);
    if (src) {
      if (icon.getAttribute("src") !== src) {
        icon.hidden = false;
        icon.setAttribute("src", src);
      }
      setAttr(icon, "alt", `Icon of ${name}`);
    } else {
      setHidden(icon, true);
      setAttr(icon, "src", null);
    }

    // The kernel is gone: what the panel shows is the last state it heard of.
    const frozen = Boolean(disabledReason) && !isSettled(snap);
    setText(badge, frozen ? `${label.text} (last known)` : label.text);
    setAttr(badge, "data-tone", label.tone);
    for (const [type, word] of BUTTONS) setAttr(buttons[type], "aria-label", `${word} ${name}`);
    refresh();

    const info = progressInfo(snap);
    const btext = bytesText(snap);
    setAttr(bar, "aria-label", `Download progress of ${name}`);
    const total = isNumber(snap.records_total) ? snap.records_total : 0;
    if (snap.state === "failure" && snap.failure_reason !== "aborted" && total > 0) {
      // Failed: the bar shows the files that arrived (not a full red bar of bytes).
      const failed = isNumber(snap.records_failed) ? snap.records_failed : 0;
      const ok = Math.max(0, Math.min(total, (isNumber(snap.records_done) ? snap.records_done : 0) - failed));
      setBar(bar, fill, { determinate: true, value: ok, max: total, fraction: ok / total }, label.text);
    } else {
      setBar(bar, fill, info, info.determinate ? `${info.percent}, ${btext}` : btext);
    }
    setAttr(bar, "data-tone", label.tone);
    setText(percent, info.percent);
    setHidden(percent, !info.determinate || !info.percent);
    setText(bytes, btext);

    const settled = isSettled(snap);
    const active = snap.state === "active";
    if (settled) {
      const elapsed = isNumber(snap.finished) && isNumber(snap.started) ? snap.finished - snap.started : null;
      setText(speed, elapsed !== null ? `in ${formatDuration(elapsed)}` : "");
      setHidden(speed, elapsed === null);
      const avg = elapsed && elapsed > 0 && isNumber(snap.downloaded) ? snap.downloaded / elapsed : null;
      setText(eta, avg ? `avg ${formatSpeed(avg)}` : "");
      setHidden(eta, !avg);
    } else {
      setText(speed, active ? formatSpeed(snap.speed) : "paused");
      setHidden(speed, false);
      // The kernel sends a smoothed ETA once it means something; until then a dash.
      setText(eta, active ? `${isNumber(snap.eta) ? formatEta(snap.eta) : DASH} left` : "");
      setHidden(eta, !active);
    }
    if (isNumber(snap.already_downloaded)) {
      // A re-run returned this registration as it was: no download happened now.
      const ago = formatAgo((now() / 1000) - snap.already_downloaded);
      setText(speed, `already downloaded ${ago}`);
      setAttr(speed, "title", new Date(snap.already_downloaded * 1000).toISOString());
      setHidden(speed, false);
    } else {
      setAttr(speed, "title", null);
    }
    if (frozen) {
      // no speed or time left: nothing moves in a panel whose kernel is gone
      setText(speed, "no longer updated");
      setHidden(speed, false);
      setHidden(eta, true);
    }
    setText(recs, recordsText(snap));
    const hasUpload = isNumber(snap.upload_total) && snap.upload_total > 0;
    setHidden(upload, !hasUpload);
    if (hasUpload) setText(upload, `uploaded ${formatBytes(snap.uploaded)} of ${formatBytes(snap.upload_total)}`);

    const where = String(snap.dest ?? "");
    setText(destPath, where);
    setAttr(destPath, "title", where || null);
    setAttr(copyButton, "aria-label", `Copy the folder of ${name}`);
    setHidden(dest, !where);

    workers.update(snap.cluster);
    records.update(snap);
    layout();
  }

  /** @param {string} reason */
  function setDisabled(reason) {
    const next = reason ? String(reason) : "";
    if (next === disabledReason) return;
    disabledReason = next;
    if (disabledReason) {
      pending = drop(pending);
      clicked = drop(clicked);
    }
    update(snap, ack);
  }

  function destroy() {
    pending = drop(pending);
    clicked = drop(clicked);
    if (copyTimer !== null) clearTimeout(copyTimer);
    root.remove();
  }

  return { el: root, update, setDisabled, destroy, records, buttons, title, bar, notice, copy: copyButton, expand };
}
