// Built from js/src by `npm run build` (esbuild). Do not edit; edit js/src instead.

// src/vocab.js
var RECORD_STATES = Object.freeze(["pending", "active", "paused", "success", "failure", "aborted"]);
var REGISTRATION_STATES = Object.freeze(["active", "paused", "needs-credentials", "success", "failure", "aborted"]);
var RESULTS = Object.freeze(["", "success", "failure"]);
var FAILURE_REASONS = Object.freeze(["", "aborted", "bad-status", "fetch-error", "quota-exceeded", "download-total-exceeded"]);
var SETTLED_STATES = /* @__PURE__ */ new Set(["aborted", "failure", "success"]);
var RECORD_SNAPSHOT_KEYS = Object.freeze(["index", "url", "status", "state", "downloaded", "total", "error", "attempts", "connections"]);
var SNAPSHOT_KEYS = Object.freeze(["key", "id", "title", "icons", "state", "result", "failure_reason", "downloaded", "download_total", "expected_bytes", "uploaded", "upload_total", "speed", "eta", "records_total", "records_done", "records_failed", "records_active", "records", "records_truncated", "started", "finished", "dest", "already_downloaded", "cluster"]);

// src/format.js
var DASH = "\u2014";
var BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
function isNumber(x) {
  return typeof x === "number" && Number.isFinite(x);
}
function formatBytes(n) {
  if (!isNumber(n) || n < 0) return DASH;
  if (n < 1024) return `${Math.round(n)} B`;
  let unit = 0;
  let value = n;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = value < 10 ? 2 : value < 100 ? 1 : 0;
  let text = value.toFixed(digits);
  if (Number(text) >= 1024 && unit < BYTE_UNITS.length - 1) {
    unit += 1;
    text = (value / 1024).toFixed(2);
  }
  return `${text} ${BYTE_UNITS[unit]}`;
}
function formatSpeed(bps) {
  if (!isNumber(bps) || bps <= 0) return DASH;
  return `${formatBytes(bps)}/s`;
}
function formatDuration(seconds) {
  if (!isNumber(seconds) || seconds < 0) return DASH;
  const s = Math.round(seconds);
  if (s < 1) return "< 1 s";
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  const h2 = Math.floor(m / 60);
  if (h2 < 24) return `${h2} h ${String(m % 60).padStart(2, "0")} min`;
  const d = Math.floor(h2 / 24);
  if (d > 999) return "> 999 d";
  return `${d} d ${h2 % 24} h`;
}
var formatEta = formatDuration;
function formatPercent(fraction, complete = false) {
  if (!isNumber(fraction)) return DASH;
  const clamped = Math.min(Math.max(fraction, 0), 1);
  let pct = Math.floor(clamped * 100);
  if (complete) pct = 100;
  else if (pct >= 100) pct = 99;
  return `${pct}%`;
}
function formatCount(n) {
  if (!isNumber(n)) return "0";
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}
var FAILURE_WORDS = Object.freeze({
  "": "failed",
  aborted: "aborted",
  "bad-status": "a server answered with an error status",
  "fetch-error": "a network error stopped a download",
  "quota-exceeded": "out of disk space or storage quota",
  "download-total-exceeded": "more data arrived than download_total allows"
});
function failureText(reason) {
  const key = String(reason ?? "");
  if (
    /** @type {readonly string[]} */
    FAILURE_REASONS.includes(key)
  ) {
    return FAILURE_WORDS[
      /** @type {import("./vocab.js").FailureReason} */
      key
    ];
  }
  return String(reason);
}
function stateLabel(snap) {
  const state = snap?.state ?? "";
  switch (state) {
    case "active":
      return { text: "Downloading", tone: "active" };
    case "paused":
      return { text: "Paused", tone: "paused" };
    case "success":
      return { text: "Complete", tone: "success" };
    case "aborted":
      return { text: "Aborted", tone: "aborted" };
    case "needs-credentials":
      return { text: "Needs credentials", tone: "warn" };
    case "failure": {
      const reason = snap?.failure_reason ?? "";
      if (reason === "aborted") return { text: "Aborted", tone: "aborted" };
      const codes = failedCodes(snap);
      const suffix = codes ? ` (${codes})` : "";
      const total = isNumber(snap?.records_total) ? snap.records_total : 0;
      const failed = isNumber(snap?.records_failed) ? snap.records_failed : 0;
      const ok = Math.max(0, (isNumber(snap?.records_done) ? snap.records_done : 0) - failed);
      if (ok > 0 && failed > 0 && reason !== "download-total-exceeded") {
        return {
          text: `${formatCount(ok)} of ${formatCount(total)} done, ${formatCount(failed)} failed${suffix}`,
          tone: "failure"
        };
      }
      return { text: `Failed: ${failureText(reason)}${suffix}`, tone: "failure" };
    }
    default:
      return { text: state ? String(state) : "Waiting", tone: "paused" };
  }
}
function failedCodes(snap) {
  const records = Array.isArray(snap?.records) ? snap.records : [];
  const codes = [];
  for (const rec of records) {
    if (rec?.state !== "failure") continue;
    const code = isNumber(rec.status) && rec.status > 0 ? String(rec.status) : "network error";
    if (!codes.includes(code)) codes.push(code);
  }
  return codes.length > 3 ? `${codes.slice(0, 3).join(", ")}, \u2026` : codes.join(", ");
}
function isSettled(snap) {
  return SETTLED_STATES.has(String(snap?.state)) || snap?.result === "success" || snap?.result === "failure";
}
function progressInfo(snap) {
  const downloaded = isNumber(snap?.downloaded) ? Math.max(0, snap.downloaded) : 0;
  let total = null;
  if (isNumber(snap?.expected_bytes) && snap.expected_bytes > 0) total = snap.expected_bytes;
  else if (isNumber(snap?.download_total) && snap.download_total > 0) total = snap.download_total;
  const success = snap?.state === "success" || snap?.result === "success";
  if (success && (total === null || downloaded > total)) total = Math.max(downloaded, 1);
  if (total === null) {
    return { determinate: false, value: downloaded, max: null, fraction: null, percent: "" };
  }
  const value = success ? total : Math.min(downloaded, total);
  const fraction = value / total;
  const failed = !success && isSettled(snap);
  return {
    determinate: true,
    value,
    max: total,
    fraction,
    percent: failed ? "" : formatPercent(fraction, success)
  };
}
function bytesText(snap) {
  const p = progressInfo(snap);
  const done = formatBytes(p.value);
  if (!p.determinate) return `${done} downloaded`;
  return `${formatBytes(p.value)} of ${formatBytes(p.max)}`;
}
function recordsText(snap) {
  const total = isNumber(snap?.records_total) ? snap.records_total : 0;
  const done = isNumber(snap?.records_done) ? snap.records_done : 0;
  const failed = isNumber(snap?.records_failed) ? snap.records_failed : 0;
  let text = `${formatCount(done)} / ${formatCount(total)} record${total === 1 ? "" : "s"}`;
  if (failed > 0) text += ` \xB7 ${formatCount(failed)} failed`;
  return text;
}
function safeImageSrc(src) {
  if (typeof src !== "string") return null;
  const trimmed = src.trim();
  if (/^data:image\/[a-z0-9.+-]+[;,]/i.test(trimmed)) return trimmed;
  let url;
  try {
    url = new URL(trimmed);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  return url.href;
}
function iconArea(sizes) {
  if (typeof sizes !== "string") return 0;
  let best = 0;
  for (const part of sizes.split(/\s+/)) {
    if (part.toLowerCase() === "any") return 64 * 64;
    const m = /^(\d+)x(\d+)$/i.exec(part);
    if (m) best = Math.max(best, Number(m[1]) * Number(m[2]));
  }
  return best;
}
function pickIcon(icons) {
  if (!Array.isArray(icons)) return null;
  const target = 32 * 32;
  let best = null;
  let bestScore = Infinity;
  for (const icon of icons) {
    const src = safeImageSrc(icon?.src);
    if (!src) continue;
    const area = iconArea(icon?.sizes);
    const score = area === 0 ? 1e9 : area >= target ? area - target : 2e9 - area;
    if (score < bestScore) {
      best = src;
      bestScore = score;
    }
  }
  return best;
}
function recordSizeText(rec) {
  const done = isNumber(rec?.downloaded) ? rec.downloaded : 0;
  if (rec?.state === "failure" || rec?.state === "aborted") {
    return done > 0 ? formatBytes(done) : DASH;
  }
  if (isNumber(rec?.total) && rec.total >= 0) {
    if (rec.state === "success") return formatBytes(Math.max(done, rec.total));
    return `${formatBytes(done)} / ${formatBytes(rec.total)}`;
  }
  return done > 0 || rec?.state === "success" ? formatBytes(done) : DASH;
}
function recordProgress(rec) {
  const done = isNumber(rec?.downloaded) ? Math.max(0, rec.downloaded) : 0;
  if (rec?.state === "success") {
    const max = Math.max(done, isNumber(rec?.total) ? rec.total : 0, 1);
    return { determinate: true, value: max, max, fraction: 1 };
  }
  if (isNumber(rec?.total) && rec.total > 0) {
    const value = Math.min(done, rec.total);
    return { determinate: true, value, max: rec.total, fraction: value / rec.total };
  }
  return { determinate: false, value: done, max: null, fraction: null };
}
function splitUrl(url) {
  const text = String(url ?? "");
  const q = text.search(/[?#]/);
  const path = q < 0 ? text : text.slice(0, q);
  const slash = path.lastIndexOf("/");
  const schemeEnd = path.indexOf("//");
  if (slash < 0 || slash <= schemeEnd + 1 || slash === path.length - 1) return [text, ""];
  return [text.slice(0, slash + 1), text.slice(slash + 1)];
}
function formatAgo(seconds) {
  if (!isNumber(seconds)) return "";
  if (seconds < 60) return "just now";
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ago`;
  const h2 = Math.floor(m / 60);
  if (h2 < 48) return `${h2} h ago`;
  return `${Math.floor(h2 / 24)} d ago`;
}

// src/dom.js
var CLS = "ipybgfetch";
function h(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== void 0) node.textContent = text;
  return node;
}
function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}
function setAttr(node, name, value) {
  if (value === null || value === void 0 || value === false) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
    return;
  }
  const v = value === true ? "" : String(value);
  if (node.getAttribute(name) !== v) node.setAttribute(name, v);
}
function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}
function setBar(bar, fill, info, label) {
  setAttr(bar, "aria-valuemin", "0");
  if (info.determinate) {
    setAttr(bar, "aria-valuemax", info.max);
    setAttr(bar, "aria-valuenow", info.value);
    setAttr(bar, "aria-valuetext", label);
    setAttr(bar, "data-indeterminate", null);
    const fraction = info.fraction ?? 0;
    const width = `${Number((Math.min(Math.max(fraction, 0), 1) * 100).toFixed(2))}%`;
    if (fill.style.width !== width) fill.style.width = width;
  } else {
    setAttr(bar, "aria-valuemax", null);
    setAttr(bar, "aria-valuenow", null);
    setAttr(bar, "aria-valuetext", label);
    setAttr(bar, "data-indeterminate", true);
    if (fill.style.width !== "") fill.style.width = "";
  }
}

// src/intents.js
var SLOW_INTENT_MS = 1e3;
var PENDING_WORDS = Object.freeze({
  pause: "Pausing\u2026",
  resume: "Resuming\u2026",
  abort: "Aborting\u2026",
  retry: "Retrying\u2026",
  clear: "Clearing\u2026"
});
var INTENT_NAMES = Object.freeze({
  pause: "Pause",
  resume: "Resume",
  abort: "Abort",
  retry: "Retry",
  click: "The click",
  clear: "Clear finished"
});
var lastSeq = Date.now();
function nextSeq() {
  lastSeq = Math.max(lastSeq + 1, Date.now());
  return lastSeq;
}
function shellWord(text) {
  const s = String(text ?? "");
  if (/^[A-Za-z0-9_.,:@%+=/-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'"'"'`)}'`;
}
function intentCode(type, id) {
  if (type === "click" || type === "clear") return "";
  return `%bgfetch ${type} ${shellWord(id)}`;
}
function slowIntentText(type) {
  const name = INTENT_NAMES[type] ?? String(type);
  return `The kernel is busy: ${name} takes effect when the running cell finishes.`;
}

// src/records.js
var MAX_ROWS = 200;
var RECORD_STATE_WORDS = Object.freeze({
  pending: "waiting",
  active: "downloading",
  paused: "paused",
  success: "done",
  failure: "failed",
  aborted: "aborted"
});
function createRecordRow(doc) {
  const tr = h(doc, "tr", `${CLS}-record`);
  const index = h(doc, "td", `${CLS}-rec-index`);
  const target = h(doc, "td", `${CLS}-rec-target`);
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
  let word = RECORD_STATE_WORDS[
    /** @type {keyof typeof RECORD_STATE_WORDS} */
    state
  ] ?? state;
  const connections = (
    /** @type {{connections?: unknown}} */
    (rec ?? {}).connections
  );
  if (state === "active" && isNumber(connections) && connections > 1) word += ` \xD7${connections}`;
  setText(row.state, word);
  setAttr(row.tr, "data-state", state);
  const attempts = isNumber(rec?.attempts) && rec.attempts > 1 ? ` (try ${rec.attempts})` : "";
  setText(row.status, (isNumber(rec?.status) && rec.status > 0 ? String(rec.status) : DASH) + attempts);
  const size = recordSizeText(rec);
  setText(row.size, size);
  const info = recordProgress(rec);
  setHidden(row.bar, state === "failure" || state === "aborted");
  setAttr(row.bar, "aria-label", `Record ${isNumber(rec?.index) ? rec.index : ""} progress`);
  setBar(row.bar, row.fill, info, info.determinate ? `${formatPercent(info.fraction, rec?.state === "success")}, ${size}` : size);
  const err = String(rec?.error ?? "");
  setText(row.error, err);
  setAttr(row.error, "title", err || null);
  setHidden(row.error, !err);
}
function createRecordList(doc) {
  const details = h(doc, "details", `${CLS}-records`);
  const summary = h(doc, "summary", `${CLS}-records-summary`, "Records");
  const note = h(doc, "div", `${CLS}-records-note`);
  note.hidden = true;
  const scroll = h(doc, "div", `${CLS}-records-scroll`);
  scroll.tabIndex = 0;
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
    ["Progress", "progress"]
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
  const rows = /* @__PURE__ */ new Map();
  let last = null;
  function renderRows() {
    const records = Array.isArray(last?.records) ? last.records : [];
    const n = Math.min(records.length, MAX_ROWS);
    const seen = /* @__PURE__ */ new Set();
    for (let i = 0; i < n; i++) {
      const rec = records[i];
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

// src/workers.js
var MAX_WORKERS = 64;
function clusterText(cluster) {
  const total = isNumber(cluster?.shards_total) ? cluster.shards_total : 0;
  const done = isNumber(cluster?.shards_done) ? cluster.shards_done : 0;
  const workers = Array.isArray(cluster?.workers) ? cluster.workers.length : 0;
  return `Cluster: ${formatCount(done)} of ${formatCount(total)} shards done, ${formatCount(workers)} worker${workers === 1 ? "" : "s"}`;
}
function createWorkerList(doc) {
  const details = h(doc, "div", `${CLS}-workers`);
  details.hidden = true;
  const summary = h(doc, "div", `${CLS}-workers-summary`);
  const table = h(doc, "table", `${CLS}-workers-table`);
  const head = h(doc, "tr");
  for (const label of ["Worker", "Files", "Downloaded", "Rate", "Shards"]) {
    const th = h(doc, "th", void 0, label);
    th.scope = "col";
    head.appendChild(th);
  }
  const thead = h(doc, "thead");
  thead.appendChild(head);
  const tbody = h(doc, "tbody");
  table.append(thead, tbody);
  details.append(summary, table);
  function update(cluster) {
    const on = Boolean(cluster && typeof cluster === "object");
    setHidden(details, !on);
    if (!on) return;
    setText(summary, clusterText(cluster));
    const workers = Array.isArray(cluster?.workers) ? cluster.workers.slice(0, MAX_WORKERS) : [];
    while (tbody.children.length > workers.length) tbody.lastElementChild?.remove();
    while (tbody.children.length < workers.length) {
      const tr = h(doc, "tr", `${CLS}-worker`);
      for (let i = 0; i < 5; i++) tr.appendChild(h(doc, "td"));
      tbody.appendChild(tr);
    }
    workers.forEach((w, i) => {
      const cells = tbody.children[i].children;
      const address = String(w?.worker ?? "");
      setText(cells[0], address);
      setAttr(cells[0], "title", address);
      setText(cells[1], formatCount(w?.files));
      setText(cells[2], formatBytes(w?.downloaded));
      setText(cells[3], formatSpeed(w?.rate));
      setText(cells[4], formatCount(w?.shards));
    });
  }
  return { el: details, update };
}

// src/registration.js
var BUTTONS = [
  ["pause", "Pause"],
  ["resume", "Resume"],
  ["retry", "Retry failed"],
  ["abort", "Abort"]
];
async function copyText(doc, text) {
  const clip = doc.defaultView?.navigator?.clipboard;
  if (clip && typeof clip.writeText === "function") {
    try {
      await clip.writeText(text);
      return;
    } catch {
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
function createPanel(doc, send, options = {}) {
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
  const buttons = (
    /** @type {Record<ButtonIntent, HTMLButtonElement>} */
    {}
  );
  for (const [type, label] of BUTTONS) {
    const b = h(doc, "button", `${CLS}-button ${CLS}-${type}`, label);
    b.type = "button";
    b.dataset.action = type;
    buttons[type] = b;
    actions.appendChild(b);
  }
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
  const dest = h(doc, "div", `${CLS}-dest`);
  dest.hidden = true;
  const destLabel = h(doc, "span", `${CLS}-dest-label`, "Saved to");
  const destPath = h(doc, "code", `${CLS}-dest-path`);
  const copyButton = h(doc, "button", `${CLS}-button ${CLS}-copy`, "Copy path");
  copyButton.type = "button";
  const copyStatus = h(doc, "span", `${CLS}-copy-status`);
  copyStatus.setAttribute("role", "status");
  dest.append(destLabel, destPath, copyButton, copyStatus);
  let copyTimer = null;
  copyButton.addEventListener("click", () => {
    const path = String(snap.dest ?? "");
    if (!path) return;
    copy(path).then(
      () => setText(copyStatus, "Copied"),
      () => setText(copyStatus, "Copy failed: select the path and copy it")
    );
    if (copyTimer !== null) clearTimeout(copyTimer);
    copyTimer = setTimeout(() => {
      copyTimer = null;
      setText(copyStatus, "");
    }, 2500);
    copyTimer?.unref?.();
  });
  const records = createRecordList(doc);
  const workers = createWorkerList(doc);
  const body = [bar, stats, dest, records.el, workers.el];
  root.append(header, notice, ...body);
  let snap = {};
  let ack = 0;
  let disabledReason = "";
  let pending = null;
  let clicked = null;
  function drop(entry) {
    if (entry?.timer) clearTimeout(entry.timer);
    return null;
  }
  function fire(type) {
    if (!snap.id || disabledReason) return;
    const isClick = type === "click";
    if (!isClick && (pending !== null || controlsDisabled())) return;
    const seq = nextSeq();
    const msg = { type, id: String(snap.id), seq };
    if (snap.key !== void 0) msg.key = snap.key;
    if (send(msg) === false) return;
    const entry = { type, seq, state: snap.state, slow: false, timer: null };
    entry.timer = setTimeout(() => {
      entry.timer = null;
      entry.slow = true;
      refresh();
    }, slowMs);
    entry.timer?.unref?.();
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
    if (pending !== null && (ack >= pending.seq || snap.state !== pending.state)) pending = drop(pending);
    if (clicked !== null && ack >= clicked.seq) clicked = drop(clicked);
  }
  function refresh() {
    settlePending();
    const state = snap.state;
    const settled = isSettled(snap);
    const failed = isNumber(snap.records_failed) ? snap.records_failed : 0;
    const show = {
      pause: !settled && state === "active",
      resume: !settled && state === "paused",
      abort: !settled && (state === "active" || state === "paused" || state === "needs-credentials"),
      // reg.retry(): the failed (and aborted) records of a settled registration again
      retry: settled && snap.result === "failure" && failed > 0 && !snap.retry_unavailable
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
      setText(eta, active ? `${isNumber(snap.eta) ? formatEta(snap.eta) : DASH} left` : "");
      setHidden(eta, !active);
    }
    if (isNumber(snap.already_downloaded)) {
      const ago = formatAgo(now() / 1e3 - snap.already_downloaded);
      setText(speed, `already downloaded ${ago}`);
      setAttr(speed, "title", new Date(snap.already_downloaded * 1e3).toISOString());
      setHidden(speed, false);
    } else {
      setAttr(speed, "title", null);
    }
    if (frozen) {
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

// src/manager.js
var MAX_PANELS = 100;
function registrationKey(snap, position) {
  if (snap?.key !== void 0 && snap?.key !== null) return `k:${snap.key}`;
  if (snap?.id !== void 0) return `i:${snap.id}:${snap.started ?? ""}`;
  return `p:${position}`;
}
function createManagerView(doc, send, options = {}) {
  const root = h(doc, "section", `${CLS}-manager`);
  root.setAttribute("aria-label", "Background fetches");
  const head = h(doc, "div", `${CLS}-manager-head`);
  const heading = h(doc, "div", `${CLS}-manager-heading`, "Background fetches");
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
  const panels = /* @__PURE__ */ new Map();
  let disabledReason = "";
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
  function update(registrations, ack) {
    const regs = Array.isArray(registrations) ? registrations : [];
    if (isNumber(ack) && ack > lastAck) lastAck = ack;
    const total = regs.length;
    const shown = Math.min(total, MAX_PANELS);
    setText(heading, `Background fetches (${formatCount(total)})`);
    setHidden(empty, total > 0);
    setHidden(more, total <= shown);
    if (total > shown) setText(more, `and ${formatCount(total - shown)} older, not shown`);
    const seen = /* @__PURE__ */ new Set();
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

// src/mount.js
var STALE_MESSAGE = "This panel lost its kernel (restarted or shut down), so its buttons no longer work. Run the cell again, or %bgfetch, for a live panel: downloads resume in the new kernel.";
var STALE_REASON = "Kernel gone: these controls no longer reach it.";
function defaultSchedule(fn) {
  if (typeof requestAnimationFrame === "function") {
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
function mount(model, el, options = {}) {
  const doc = el.ownerDocument;
  const schedule = options.schedule ?? defaultSchedule;
  const root = h(doc, "div", `${CLS}-root`);
  const banner = h(doc, "div", `${CLS}-error`);
  banner.setAttribute("role", "alert");
  banner.hidden = true;
  root.appendChild(banner);
  el.appendChild(root);
  let mode = null;
  let view = null;
  let queued = false;
  let alive = true;
  let stale = false;
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

// src/panel.js
var panel_default = {
  /** @param {{model: import("./mount.js").Model, el: HTMLElement}} props */
  render({ model, el }) {
    return mount(model, el);
  }
};
export {
  panel_default as default
};
