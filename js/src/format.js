// Formatting: numbers, sizes, durations, states and icons as the panel shows them.
// Pure functions of a snapshot (or part of one); junk in gives a dash, never a throw.
import { FAILURE_REASONS, SETTLED_STATES } from "./vocab.js";

/** @typedef {import("./vocab.js").Snapshot} Snapshot */
/** @typedef {import("./vocab.js").RecordSnapshot} RecordSnapshot */
/** A snapshot as it may arrive: any key missing, or nothing at all. */
/** @typedef {Partial<Snapshot> | null | undefined} MaybeSnapshot */
/** @typedef {Partial<RecordSnapshot> | null | undefined} MaybeRecord */

export const DASH = "\u2014";

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/**
 * @param {unknown} x
 * @returns {x is number}
 */
export function isNumber(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/**
 * 0 -> "0 B", 1536 -> "1.50 KiB", 10 * 2**20 -> "10.0 MiB"; junk -> "—".
 * @param {unknown} n
 */
export function formatBytes(n) {
  if (!isNumber(n) || n < 0) return DASH;
  if (n < 1024) return `${Math.round(n)} B`;
  let unit = 0;
  let value = n;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  // Three significant digits, without rounding up into "1024 KiB".
  const digits = value < 10 ? 2 : value < 100 ? 1 : 0;
  let text = value.toFixed(digits);
  if (Number(text) >= 1024 && unit < BYTE_UNITS.length - 1) {
    unit += 1;
    text = (value / 1024).toFixed(2);
  }
  return `${text} ${BYTE_UNITS[unit]}`;
}

/**
 * Bytes per second -> "1.20 MiB/s"; zero, negative or unknown -> "—".
 * @param {unknown} bps
 */
export function formatSpeed(bps) {
  if (!isNumber(bps) || bps <= 0) return DASH;
  return `${formatBytes(bps)}/s`;
}

/**
 * Seconds remaining -> "42 s", "3 min 05 s", "2 h 07 min", "3 d 4 h"; unknown -> "—".
 * @param {unknown} seconds
 */
export function formatDuration(seconds) {
  if (!isNumber(seconds) || seconds < 0) return DASH;
  const s = Math.round(seconds);
  if (s < 1) return "< 1 s";
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${String(m % 60).padStart(2, "0")} min`;
  const d = Math.floor(h / 24);
  if (d > 999) return "> 999 d";
  return `${d} d ${h % 24} h`;
}

export const formatEta = formatDuration;

/**
 * Fraction 0..1 -> "42%". Never says 100% before the work is really complete.
 * @param {unknown} fraction
 * @param {boolean} [complete]
 */
export function formatPercent(fraction, complete = false) {
  if (!isNumber(fraction)) return DASH;
  const clamped = Math.min(Math.max(fraction, 0), 1);
  let pct = Math.floor(clamped * 100);
  if (complete) pct = 100;
  else if (pct >= 100) pct = 99;
  return `${pct}%`;
}

/**
 * 12345 -> "12,345" independent of the page's locale quirks.
 * @param {unknown} n
 */
export function formatCount(n) {
  if (!isNumber(n)) return "0";
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/**
 * Plain words for each failure reason of the vocabulary.
 * @type {Readonly<Record<import("./vocab.js").FailureReason, string>>}
 */
export const FAILURE_WORDS = Object.freeze({
  "": "failed",
  aborted: "aborted",
  "bad-status": "a server answered with an error status",
  "fetch-error": "a network error stopped a download",
  "quota-exceeded": "out of disk space or storage quota",
  "download-total-exceeded": "more data arrived than download_total allows",
});

/**
 * Plain words for a failure reason; unknown reasons are shown as they are (as text).
 * @param {unknown} reason
 */
export function failureText(reason) {
  const key = String(reason ?? "");
  if (/** @type {readonly string[]} */ (FAILURE_REASONS).includes(key)) {
    return FAILURE_WORDS[/** @type {import("./vocab.js").FailureReason} */ (key)];
  }
  return String(reason);
}

/** @typedef {"active" | "paused" | "success" | "failure" | "aborted" | "warn"} Tone */

/**
 * The badge: its text and tone.
 * @param {MaybeSnapshot} snap
 * @returns {{text: string, tone: Tone}}
 */
export function stateLabel(snap) {
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
      // records_done counts every settled record, failed ones included.
      const failed = isNumber(snap?.records_failed) ? snap.records_failed : 0;
      const ok = Math.max(0, (isNumber(snap?.records_done) ? snap.records_done : 0) - failed);
      if (ok > 0 && failed > 0 && reason !== "download-total-exceeded") {
        // Some files arrived: say how many, not a wholesale "Failed".
        return {
          text: `${formatCount(ok)} of ${formatCount(total)} done, ${formatCount(failed)} failed${suffix}`,
          tone: "failure",
        };
      }
      return { text: `Failed: ${failureText(reason)}${suffix}`, tone: "failure" };
    }
    default:
      return { text: state ? String(state) : "Waiting", tone: "paused" };
  }
}

/**
 * What the failed records of a snapshot got: "404", "404, 500", "network error"; "" if none
 * of the records it carries failed (at most three, then "…").
 * @param {MaybeSnapshot} snap
 */
export function failedCodes(snap) {
  const records = Array.isArray(snap?.records) ? snap.records : [];
  /** @type {string[]} */
  const codes = [];
  for (const rec of records) {
    if (rec?.state !== "failure") continue;
    const code = isNumber(rec.status) && rec.status > 0 ? String(rec.status) : "network error";
    if (!codes.includes(code)) codes.push(code);
  }
  return codes.length > 3 ? `${codes.slice(0, 3).join(", ")}, \u2026` : codes.join(", ");
}

/**
 * True once the registration can no longer change.
 * @param {MaybeSnapshot} snap
 */
export function isSettled(snap) {
  return SETTLED_STATES.has(String(snap?.state)) || snap?.result === "success" || snap?.result === "failure";
}

/**
 * @typedef {object} ProgressInfo
 * @property {boolean} determinate
 * @property {number} value
 * @property {number | null} max
 * @property {number | null} fraction
 * @property {string} percent
 */

/**
 * What the progress bar shows.
 * Determinate when the expected size (all Content-Lengths known) or download_total is known,
 * or once the registration succeeded; indeterminate otherwise.
 * @param {MaybeSnapshot} snap
 * @returns {ProgressInfo}
 */
export function progressInfo(snap) {
  const downloaded = isNumber(snap?.downloaded) ? Math.max(0, snap.downloaded) : 0;
  /** @type {number | null} */
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
  // A failed or aborted registration is not "99%" of anything: no percentage.
  const failed = !success && isSettled(snap);
  return {
    determinate: true,
    value,
    max: total,
    fraction,
    percent: failed ? "" : formatPercent(fraction, success),
  };
}

/**
 * "4.50 MiB of 10.0 MiB" / "4.50 MiB downloaded" (unknown total).
 * @param {MaybeSnapshot} snap
 */
export function bytesText(snap) {
  const p = progressInfo(snap);
  const done = formatBytes(p.value);
  if (!p.determinate) return `${done} downloaded`;
  return `${formatBytes(p.value)} of ${formatBytes(p.max)}`;
}

/**
 * "1 / 3 records · 1 failed".
 * @param {MaybeSnapshot} snap
 */
export function recordsText(snap) {
  const total = isNumber(snap?.records_total) ? snap.records_total : 0;
  const done = isNumber(snap?.records_done) ? snap.records_done : 0;
  const failed = isNumber(snap?.records_failed) ? snap.records_failed : 0;
  let text = `${formatCount(done)} / ${formatCount(total)} record${total === 1 ? "" : "s"}`;
  if (failed > 0) text += ` \u00b7 ${formatCount(failed)} failed`;
  return text;
}

/**
 * Only http(s) URLs and data:image/* pass; everything else (javascript:, relative...) -> null.
 * @param {unknown} src
 * @returns {string | null}
 */
export function safeImageSrc(src) {
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

/** @param {unknown} sizes */
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

/**
 * The icon closest to 32x32 (at least as large if possible) whose src is safe, or null.
 * @param {unknown} icons
 * @returns {string | null}
 */
export function pickIcon(icons) {
  if (!Array.isArray(icons)) return null;
  const target = 32 * 32;
  /** @type {string | null} */
  let best = null;
  let bestScore = Infinity;
  for (const icon of icons) {
    const src = safeImageSrc(icon?.src);
    if (!src) continue;
    const area = iconArea(icon?.sizes);
    // Prefer icons >= target; among them the smallest; unknown sizes rank in the middle.
    const score = area === 0 ? 1e9 : area >= target ? area - target : 2e9 - area;
    if (score < bestScore) {
      best = src;
      bestScore = score;
    }
  }
  return best;
}

/**
 * A record's size column: "1.00 KiB / 2.00 KiB", "2.00 KiB" once done, "—" unknown.
 * @param {MaybeRecord} rec
 */
export function recordSizeText(rec) {
  const done = isNumber(rec?.downloaded) ? rec.downloaded : 0;
  if (rec?.state === "failure" || rec?.state === "aborted") {
    // What arrived (an error page's body, part of a file), not "335 B of 335 B".
    return done > 0 ? formatBytes(done) : DASH;
  }
  if (isNumber(rec?.total) && rec.total >= 0) {
    if (rec.state === "success") return formatBytes(Math.max(done, rec.total));
    return `${formatBytes(done)} / ${formatBytes(rec.total)}`;
  }
  return done > 0 || rec?.state === "success" ? formatBytes(done) : DASH;
}

/**
 * A record's own progress bar.
 * @param {MaybeRecord} rec
 * @returns {import("./dom.js").BarInfo}
 */
export function recordProgress(rec) {
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

/**
 * A URL split for a middle ellipsis: the head may be cut, the tail (the file name, with
 * its query) stays. "https://h/a/b/file.csv?x=1" -> ["https://h/a/b/", "file.csv?x=1"].
 * @param {unknown} url
 * @returns {[string, string]}
 */
export function splitUrl(url) {
  const text = String(url ?? "");
  const q = text.search(/[?#]/);
  const path = q < 0 ? text : text.slice(0, q);
  const slash = path.lastIndexOf("/");
  const schemeEnd = path.indexOf("//");
  if (slash < 0 || slash <= schemeEnd + 1 || slash === path.length - 1) return [text, ""];
  return [text.slice(0, slash + 1), text.slice(slash + 1)];
}

/**
 * Seconds ago -> "just now", "5 min ago", "3 h ago", "2 d ago".
 * @param {unknown} seconds
 */
export function formatAgo(seconds) {
  if (!isNumber(seconds)) return "";
  if (seconds < 60) return "just now";
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}
