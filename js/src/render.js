// The panel's render logic, one concern per module; this module re-exports them all
// (the tests and panel.js import from here).
//
// Two rules hold throughout:
//
// * Data is text, never markup. Titles, URLs, ids, errors and icon sources come from
//   servers and users; they only ever reach the page through `textContent`,
//   `setAttribute` of a non-executable attribute, or an <img src> that passed
//   `safeImageSrc`. There is no innerHTML anywhere in js/src.
// * Views are built once and then updated in place. A state message (at most ~10/s per
//   registration) only touches the text nodes and attributes whose value changed, and the
//   record list is keyed by record index, capped at MAX_ROWS rows and only materialised
//   while its <details> is open.
//
//   format.js        numbers, sizes, durations, states, icons (pure)
//   dom.js           element creation and in-place updates
//   intents.js       what the buttons send; words while an intent waits
//   records.js       the records table
//   registration.js  one registration's panel
//   manager.js       the manager view (every registration)
//   workers.js       the per-worker breakdown of a cluster run
//   mount.js         the widget: mode switch, error banner, lost kernel
//   vocab.js         states, failure reasons, snapshot keys (generated from Python)
export { SETTLED_STATES } from "./vocab.js";
export {
  DASH,
  FAILURE_WORDS,
  bytesText,
  failedCodes,
  failureText,
  formatAgo,
  formatBytes,
  formatCount,
  formatDuration,
  formatEta,
  formatPercent,
  formatSpeed,
  isNumber,
  isSettled,
  pickIcon,
  progressInfo,
  recordProgress,
  recordSizeText,
  recordsText,
  safeImageSrc,
  splitUrl,
  stateLabel,
} from "./format.js";
export { CLS, h, setAttr, setBar, setHidden, setText } from "./dom.js";
export { PENDING_WORDS, SLOW_INTENT_MS, intentCode, nextSeq, shellWord, slowIntentText } from "./intents.js";
export { MAX_ROWS, RECORD_STATE_WORDS, createRecordList } from "./records.js";
export { createPanel } from "./registration.js";
export { MAX_PANELS, createManagerView, registrationKey } from "./manager.js";
export { STALE_MESSAGE, STALE_REASON, mount } from "./mount.js";
export { MAX_WORKERS, clusterText, createWorkerList } from "./workers.js";
