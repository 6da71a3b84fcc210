// A registration running on a Dask cluster (`fetch(..., cluster=client)`): its shards and
// one row per worker (files, bytes, rate, shards running), from snapshot.cluster.
import { CLS, h, setAttr, setHidden, setText } from "./dom.js";
import { formatBytes, formatCount, formatSpeed, isNumber } from "./format.js";

/** @typedef {import("./vocab.js").ClusterSnapshot} ClusterSnapshot */
/** @typedef {import("./vocab.js").ClusterWorkerSnapshot} ClusterWorkerSnapshot */

/** At most this many worker rows. */
export const MAX_WORKERS = 64;

/**
 * "Cluster: 3 of 8 shards done, 2 workers".
 * @param {Partial<ClusterSnapshot> | null | undefined} cluster
 */
export function clusterText(cluster) {
  const total = isNumber(cluster?.shards_total) ? cluster.shards_total : 0;
  const done = isNumber(cluster?.shards_done) ? cluster.shards_done : 0;
  const workers = Array.isArray(cluster?.workers) ? cluster.workers.length : 0;
  return `Cluster: ${formatCount(done)} of ${formatCount(total)} shards done, ${formatCount(workers)} worker${workers === 1 ? "" : "s"}`;
}

/**
 * @typedef {object} WorkerList
 * @property {HTMLDivElement} el
 * @property {(cluster: Partial<ClusterSnapshot> | null | undefined) => void} update
 */

/**
 * The per-worker breakdown: a line and one table row per worker; hidden for a local run.
 * @param {Document} doc
 * @returns {WorkerList}
 */
export function createWorkerList(doc) {
  const details = h(doc, "div", `${CLS}-workers`);
  details.hidden = true;
  const summary = h(doc, "div", `${CLS}-workers-summary`);
  const table = h(doc, "table", `${CLS}-workers-table`);
  const head = h(doc, "tr");
  for (const label of ["Worker", "Files", "Downloaded", "Rate", "Shards"]) {
    const th = h(doc, "th", undefined, label);
    th.scope = "col";
    head.appendChild(th);
  }
  const thead = h(doc, "thead");
  thead.appendChild(head);
  const tbody = h(doc, "tbody");
  table.append(thead, tbody);
  details.append(summary, table);

  /** @param {Partial<ClusterSnapshot> | null | undefined} cluster */
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
