// The records table: a <details> list keyed by record index, capped at MAX_ROWS rows and
// only materialised while it is open.
import { CLS, h, setAttr, setBar, setHidden, setText } from "./dom.js";
import {
  DASH,
  formatCount,
  formatPercent,
  isNumber,
  recordProgress,
  recordSizeText,
  splitUrl,
} from "./format.js";

/** @typedef {import("./format.js").MaybeSnapshot} MaybeSnapshot */
/** @typedef {import("./format.js").MaybeRecord} MaybeRecord */

export const MAX_ROWS = 200;

/** Words for a record's state. */
export const RECORD_STATE_WORDS = Object.freeze({
  pending: "waiting",
  active: "downloading",
  paused: "paused",
  success: "done",
  failure: "failed",
  aborted: "aborted",
});

/**
 * @typedef {object} RecordRow
 * @property {HTMLTableRowElement} tr
 * @property {HTMLTableCellElement} index
 * @property {HTMLDivElement} url
 * @property {HTMLSpanElement} urlHead
 * @property {HTMLSpanElement} urlName
 * @property {HTMLSpanElement} urlQuery
 * @property {HTMLTableCellElement} state
 * @property {HTMLTableCellElement} status
 * @property {HTMLTableCellElement} size
 * @property {HTMLDivElement} bar
 * @property {HTMLDivElement} fill
 * @property {HTMLDivElement} error
 */

/**
 * @param {Document} doc
 * @returns {RecordRow}
 */
function createRecordRow(doc) {
  const tr = h(doc, "tr", `${CLS}-record`);
  const index = h(doc, "td", `${CLS}-rec-index`);
  // URL and (if any) the error under it: the error stays readable however narrow the table.
  const target = h(doc, "td", `${CLS}-rec-target`);
  // Three spans: the head (scheme, host, folders) and the query get the ellipsis; the file
  // name in between stays visible.
  const url = h(doc, "div", `${CLS}-rec-url`);
  const urlHead = h(doc, "span", `${CLS}-url-head`);
  const urlName = h(doc, "span", `${CLS}-url-tail ${CLS}-url-name`);
  const urlQuery = h(doc, "span", `${CLS}-url-query`);
  url.append(urlHead, urlName, urlQuery);
  const error = h(doc, "div", `${CLS}-rec-error`);
  error.hidden = true;
  target.append(url, error);
  const state = h(doc, "td", `${CLS}-rec-state`);
  const status = h(doc, "td", `${CLS}-rec-status`);
  const size = h(doc, "td", `${CLS}-rec-size`);
  const progressCell = h(doc, "td", `${CLS}-rec-progress`);
  const bar = h(doc, "div", `${CLS}-bar ${CLS}-bar-small`);
  bar.setAttribute("role", "progressbar");
  const fill = h(doc, "div", `${CLS}-bar-fill`);
  bar.appendChild(fill);
  progressCell.appendChild(bar);
  tr.append(index, target, state, status, size, progressCell);
  return { tr, index, url, urlHead, urlName, urlQuery, state, status, size, bar, fill, error };
}

/**
 * @param {RecordRow} row
 * @param {MaybeRecord} rec
 */
function updateRecordRow(row, rec) {
  const url = String(rec?.url ?? "");
  setText(row.index, isNumber(rec?.index) ? rec.index : "");
  const [head, tail] = splitUrl(url);
  const q = tail.search(/[?#]/);
  setText(row.urlHead, head);
  setText(row.urlName, q < 0 ? tail : tail.slice(0, q));
  setText(row.urlQuery, q < 0 ? "" : tail.slice(q));
  setAttr(row.url, "title", url);
  const state = String(rec?.state ?? "");
  let word = RECORD_STATE_WORDS[/** @type {keyof typeof RECORD_STATE_WORDS} */ (state)] ?? state;
  // A big file in segments: how many connections carry it (snapshot key "connections").
  const connections = /** @type {{connections?: unknown}} */ (rec ?? {}).connections;
  if (state === "active" && isNumber(connections) && connections > 1) word += ` \u00d7${connections}`;
  setText(row.state, word);
  setAttr(row.tr, "data-state", state);
  const attempts = isNumber(rec?.attempts) && rec.attempts > 1 ? ` (try ${rec.attempts})` : "";
  setText(row.status, (isNumber(rec?.status) && rec.status > 0 ? String(rec.status) : DASH) + attempts);
  const size = recordSizeText(rec);
  setText(row.size, size);
  const info = recordProgress(rec);
  // A failed or aborted record has no progress to show (not a full red "99%" bar).
  setHidden(row.bar, state === "failure" || state === "aborted");
  setAttr(row.bar, "aria-label", `Record ${isNumber(rec?.index) ? rec.index : ""} progress`);
  setBar(row.bar, row.fill, info, info.determinate ? `${formatPercent(info.fraction, rec?.state === "success")}, ${size}` : size);
  const err = String(rec?.error ?? "");
  setText(row.error, err);
  setAttr(row.error, "title", err || null);
  setHidden(row.error, !err);
}

/**
 * @typedef {object} RecordList
 * @property {HTMLDetailsElement} el
 * @property {(snap: MaybeSnapshot) => void} update
 * @property {Map<number | string, RecordRow>} rows
 * @property {HTMLTableSectionElement} tbody
 */

/**
 * The <details> list of records: keyed rows, capped at MAX_ROWS, built only while open.
 * @param {Document} doc
 * @returns {RecordList}
 */
export function createRecordList(doc) {
  const details = h(doc, "details", `${CLS}-records`);
  const summary = h(doc, "summary", `${CLS}-records-summary`, "Records");
  const note = h(doc, "div", `${CLS}-records-note`);
  note.hidden = true;
  const scroll = h(doc, "div", `${CLS}-records-scroll`);
  scroll.tabIndex = 0; // a scrollable region must be reachable from the keyboard
  scroll.setAttribute("role", "region");
  const table = h(doc, "table", `${CLS}-records-table`);
  const thead = h(doc, "thead");
  const headRow = h(doc, "tr");
  for (const [label, cls] of [
    ["#", "index"],
    ["URL", "target"],
    ["State", "state"],
    ["HTTP", "status"],
    ["Size", "size"],
    ["Progress", "progress"],
  ]) {
    const th = h(doc, "th", `${CLS}-rec-${cls}`, label);
    th.scope = "col";
    headRow.appendChild(th);
  }
  thead.appendChild(headRow);
  const tbody = h(doc, "tbody");
  table.append(thead, tbody);
  scroll.appendChild(table);
  details.append(summary, note, scroll);

  /** @type {Map<number | string, RecordRow>} record index (or position) -> row */
  const rows = new Map();
  /** @type {MaybeSnapshot} */
  let last = null;

  function renderRows() {
    const records = Array.isArray(last?.records) ? last.records : [];
    const n = Math.min(records.length, MAX_ROWS);
    /** @type {Set<number | string>} */
    const seen = new Set();
    for (let i = 0; i < n; i++) {
      const rec = records[i];
      /** @type {number | string} */
      let key = isNumber(rec?.index) ? rec.index : `p${i}`;
      if (seen.has(key)) key = `p${i}`;
      seen.add(key);
      let row = rows.get(key);
      if (!row) {
        row = createRecordRow(doc);
        rows.set(key, row);
      }
      updateRecordRow(row, rec);
      const at = tbody.children[i];
      if (at !== row.tr) tbody.insertBefore(row.tr, at ?? null);
    }
    for (const [key, row] of rows) {
      if (!seen.has(key)) {
        row.tr.remove();
        rows.delete(key);
      }
    }
  }

  function clearRows() {
    for (const row of rows.values()) row.tr.remove();
    rows.clear();
  }

  details.addEventListener("toggle", () => {
    if (details.open) renderRows();
    else clearRows();
  });

  /** @param {MaybeSnapshot} snap */
  function update(snap) {
    last = snap;
    const total = isNumber(snap?.records_total) ? snap.records_total : 0;
    const records = Array.isArray(snap?.records) ? snap.records : [];
    setText(summary, `Records (${formatCount(total)})`);
    setAttr(scroll, "aria-label", `Records of ${snap?.title || snap?.id || "this fetch"}`);
    const shown = Math.min(records.length, MAX_ROWS);
    const truncated = Boolean(snap?.records_truncated) || shown < total || records.length > MAX_ROWS;
    setHidden(note, !truncated);
    if (truncated) {
      setText(note, `Showing ${formatCount(shown)} of ${formatCount(total)} records (active and failed first).`);
    }
    if (details.open) renderRows();
  }

  return { el: details, update, rows, tbody };
}
