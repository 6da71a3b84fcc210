// Small DOM helpers. All text goes through textContent and attributes through
// setAttribute: data from servers and users never becomes markup.

/** The class prefix of every element the panel creates. */
export const CLS = "ipybgfetch";

/**
 * A new element with an optional class and text.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {Document} doc
 * @param {K} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Set a node's text, touching the DOM only when it changes.
 * @param {Node} node
 * @param {unknown} text
 */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

/**
 * Set (true: empty value), change or remove (null/undefined/false) an attribute.
 * @param {Element} node
 * @param {string} name
 * @param {string | number | boolean | null | undefined} value
 */
export function setAttr(node, name, value) {
  if (value === null || value === undefined || value === false) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
    return;
  }
  const v = value === true ? "" : String(value);
  if (node.getAttribute(name) !== v) node.setAttribute(name, v);
}

/**
 * @param {HTMLElement} node
 * @param {boolean} hidden
 */
export function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}

/**
 * @typedef {object} BarInfo what a progress bar shows
 * @property {boolean} determinate
 * @property {number} value
 * @property {number | null} max
 * @property {number | null} fraction
 */

/**
 * Update an ARIA progressbar and its fill.
 * @param {HTMLElement} bar
 * @param {HTMLElement} fill
 * @param {BarInfo} info
 * @param {string} label the aria-valuetext
 */
export function setBar(bar, fill, info, label) {
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
    // ARIA: an indeterminate progressbar has no aria-valuenow / aria-valuemax.
    setAttr(bar, "aria-valuemax", null);
    setAttr(bar, "aria-valuenow", null);
    setAttr(bar, "aria-valuetext", label);
    setAttr(bar, "data-indeterminate", true);
    if (fill.style.width !== "") fill.style.width = "";
  }
}
