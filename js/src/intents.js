// Intents: what the panel sends to the kernel ({type, id, key, seq}), and the words and
// code it shows while an intent waits for a busy kernel.

/** @typedef {"pause" | "resume" | "abort" | "retry" | "click" | "clear"} IntentType */
/** The buttons of one registration's panel. */
/** @typedef {"pause" | "resume" | "abort" | "retry"} ButtonIntent */

/**
 * @typedef {object} Intent
 * @property {IntentType} type
 * @property {string} id the registration's id ("" for the manager's "clear")
 * @property {string} [key] which registration object (ids are reusable)
 * @property {number} seq increasing; the kernel acks the newest it carried out
 */

/** Sends an intent; false when it cannot be delivered (the kernel is gone). */
/** @typedef {(msg: Intent) => boolean | void} Send */

/** How long an intent may go unconfirmed before the panel explains the wait (ms). */
export const SLOW_INTENT_MS = 1000;

/** @type {Readonly<Record<ButtonIntent | "clear", string>>} */
export const PENDING_WORDS = Object.freeze({
  pause: "Pausing\u2026",
  resume: "Resuming\u2026",
  abort: "Aborting\u2026",
  retry: "Retrying\u2026",
  clear: "Clearing\u2026",
});

/** @type {Readonly<Record<IntentType, string>>} */
const INTENT_NAMES = Object.freeze({
  pause: "Pause",
  resume: "Resume",
  abort: "Abort",
  retry: "Retry",
  click: "The click",
  clear: "Clear finished",
});

// Intents are numbered across every panel of the page, increasing (the kernel acks the
// newest it carried out; it handles one comm's intents in order).
let lastSeq = Date.now();

/** The next intent number of this page. */
export function nextSeq() {
  lastSeq = Math.max(lastSeq + 1, Date.now());
  return lastSeq;
}

/**
 * An id as one shell word for a %bgfetch line: bare when safe, else single-quoted.
 * @param {unknown} text
 */
export function shellWord(text) {
  const s = String(text ?? "");
  if (/^[A-Za-z0-9_.,:@%+=/-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'"'"'`)}'`;
}

/**
 * The one line of code that does what a button does, for when the button has to wait.
 * @param {IntentType} type
 * @param {unknown} id
 */
export function intentCode(type, id) {
  if (type === "click" || type === "clear") return "";
  return `%bgfetch ${type} ${shellWord(id)}`;
}

/**
 * What the panel says while an intent waits for a busy kernel.
 * @param {IntentType} type
 */
export function slowIntentText(type) {
  const name = INTENT_NAMES[type] ?? String(type);
  return `The kernel is busy: ${name} takes effect when the running cell finishes.`;
}
