// Generated from ipybgfetch/_vocab.py by tools/vocab_js.py: do not edit by hand.
// Regenerate with `python tools/vocab_js.py`; tests/test_vocab.py checks it.

/** @typedef {"pending" | "active" | "paused" | "success" | "failure" | "aborted"} RecordState */
/** @typedef {"active" | "paused" | "needs-credentials" | "success" | "failure" | "aborted"} RegistrationState */
/** @typedef {"" | "success" | "failure"} Result */
/** @typedef {"" | "aborted" | "bad-status" | "fetch-error" | "quota-exceeded" | "download-total-exceeded"} FailureReason */

export const RECORD_STATES = Object.freeze(["pending", "active", "paused", "success", "failure", "aborted"]);
export const REGISTRATION_STATES = Object.freeze(["active", "paused", "needs-credentials", "success", "failure", "aborted"]);
export const RESULTS = Object.freeze(["", "success", "failure"]);
export const FAILURE_REASONS = Object.freeze(["", "aborted", "bad-status", "fetch-error", "quota-exceeded", "download-total-exceeded"]);
/** The states a record or registration never leaves. */
export const SETTLED_STATES = new Set(["aborted", "failure", "success"]);

/**
 * One Dask worker of a registration running on a cluster (`fetch(..., cluster=)`).
 * @typedef {object} ClusterWorkerSnapshot
 * @property {string} worker
 * @property {number} downloaded
 * @property {number} files
 * @property {number} rate
 * @property {number} shards
 */

/**
 * A registration's cluster run: its shards and the per-worker breakdown.
 * @typedef {object} ClusterSnapshot
 * @property {string} scheduler
 * @property {number} shards_total
 * @property {number} shards_done
 * @property {Array<ClusterWorkerSnapshot>} workers
 */

/**
 * One record as the panel shows it.
 * @typedef {object} RecordSnapshot
 * @property {number} index
 * @property {string} url
 * @property {number} status
 * @property {RecordState} state
 * @property {number} downloaded
 * @property {number | null} total
 * @property {string} error
 * @property {number} attempts
 * @property {number} connections
 */
export const RECORD_SNAPSHOT_KEYS = Object.freeze(["index", "url", "status", "state", "downloaded", "total", "error", "attempts", "connections"]);

/**
 * A registration as the panel shows it (`registration._snapshot()`), at most ~10 times a second; the browser side only renders it.
 * @typedef {object} Snapshot
 * @property {string} key
 * @property {string} id
 * @property {string} title
 * @property {Array<Record<string, string>>} icons
 * @property {RegistrationState} state
 * @property {Result} result
 * @property {FailureReason} failure_reason
 * @property {number} downloaded
 * @property {number} download_total
 * @property {number | null} expected_bytes
 * @property {number} uploaded
 * @property {number} upload_total
 * @property {number} speed
 * @property {number | null} eta
 * @property {number} records_total
 * @property {number} records_done
 * @property {number} records_failed
 * @property {number} records_active
 * @property {Array<RecordSnapshot>} records
 * @property {boolean} records_truncated
 * @property {number} started
 * @property {number | null} finished
 * @property {string} dest
 * @property {number | null} already_downloaded
 * @property {ClusterSnapshot | null} cluster
 */
export const SNAPSHOT_KEYS = Object.freeze(["key", "id", "title", "icons", "state", "result", "failure_reason", "downloaded", "download_total", "expected_bytes", "uploaded", "upload_total", "speed", "eta", "records_total", "records_done", "records_failed", "records_active", "records", "records_truncated", "started", "finished", "dest", "already_downloaded", "cluster"]);
