// Building the page. Everything the gateway, an agent or a client sent is put
// in the page as text (textContent, attribute values), never parsed as
// HTML; styles come from classes (the page's CSP allows no inline style).

/**
 * Create an element.
 * `attrs`: `class`, `text`, `on<event>` handlers, boolean attributes
 * (true/false), `dataset` entries as `data-*`, anything else as an
 * attribute; null/undefined/false values are left out.
 * Children: nodes, strings (as text), arrays of them; null/false skipped.
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...any} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value') /** @type {any} */ (el).value = value;
    else if (key === 'checked' || key === 'selected') /** @type {any} */ (el)[key] = Boolean(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/**
 * @param {Node} parent
 * @param {any[]} children
 */
function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
}

/**
 * Replace an element's children.
 * @param {Element} el
 * @param {...any} children
 */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A unique id for label/field pairs. */
let counter = 0;
export function uid(prefix = 'f') {
  counter += 1;
  return `${prefix}-${counter}`;
}

/**
 * A labelled form field: the label, the control and an optional hint.
 * @param {string} label
 * @param {HTMLElement} control
 * @param {string} [hint]
 */
export function field(label, control, hint) {
  if (!control.id) control.id = uid();
  const hintEl = hint ? h('small', { class: 'hint', id: `${control.id}-hint`, text: hint }) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id, text: label }), control, hintEl);
}

/**
 * A table: `columns` are `[header, cell(row) → node|string]`.
 * @template T
 * @param {Array<[string, (row: T) => any]>} columns
 * @param {T[]} rows
 * @param {{empty?: string, caption?: string, rowAttrs?: (row: T) => Record<string, any>, key?: (row: T) => string}} [options]
 */
export function table(columns, rows, options = {}) {
  if (rows.length === 0) return h('p', { class: 'empty', text: options.empty ?? 'Nothing here.' });
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      options.caption ? h('caption', { text: options.caption }) : null,
      h('thead', {}, h('tr', {}, columns.map(([name]) => h('th', { scope: 'col', text: name })))),
      h(
        'tbody',
        {},
        rows.map((row) =>
          h(
            'tr',
            { ...(options.rowAttrs?.(row) ?? {}), 'data-key': options.key?.(row) },
            columns.map(([, cell]) => h('td', {}, cell(row))),
          ),
        ),
      ),
    ),
  );
}

/** Most characters of JSON shown in one block. */
const JSON_LIMIT = 20_000;

/**
 * Pretty JSON in a <pre>, cut when very long.
 * @param {unknown} value
 */
export function json(value, cls = 'json') {
  let text;
  try {
    text = JSON.stringify(value, null, 2) ?? 'undefined';
  } catch {
    text = String(value);
  }
  if (text.length > JSON_LIMIT) text = `${text.slice(0, JSON_LIMIT)}\n… (${text.length - JSON_LIMIT} more characters)`;
  return h('pre', { class: cls, text });
}

/** @param {number} n */
const two = (n) => String(n).padStart(2, '0');

/**
 * A Unix time in milliseconds as local `YYYY-MM-DD HH:MM:SS`.
 * @param {number | null | undefined} ms
 */
export function time(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/**
 * A <time> element with the machine-readable value.
 * @param {number | null | undefined} ms
 */
export function timeEl(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  return h('time', { datetime: new Date(ms).toISOString(), text: time(ms) });
}

/**
 * A duration in milliseconds, e.g. `2 d 03 h`, `4 m 05 s`, `850 ms`.
 * @param {number} ms
 */
export function duration(ms) {
  if (!Number.isFinite(ms)) return '—';
  const sign = ms < 0 ? '-' : '';
  ms = Math.abs(ms);
  if (ms < 1000) return `${sign}${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  const [d, hr, m, sec] = [Math.floor(s / 86400), Math.floor(s / 3600) % 24, Math.floor(s / 60) % 60, s % 60];
  if (d > 0) return `${sign}${d} d ${two(hr)} h`;
  if (hr > 0) return `${sign}${hr} h ${two(m)} m`;
  if (m > 0) return `${sign}${m} m ${two(sec)} s`;
  return `${sign}${sec} s`;
}

/**
 * A small status pill.
 * @param {string} text
 * @param {'ok' | 'warn' | 'bad' | 'info' | 'muted'} kind
 */
export function pill(text, kind = 'info') {
  return h('span', { class: `pill pill-${kind}`, text });
}

/**
 * A message box (role=alert for errors so screen readers announce it).
 * @param {'error' | 'info' | 'ok' | 'warn'} kind
 * @param {...any} content
 */
export function notice(kind, ...content) {
  return h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...content);
}

/**
 * A section with a heading.
 * @param {string} title
 * @param {...any} content
 */
export function section(title, ...content) {
  const id = uid('sec');
  return h('section', { class: 'panel', 'aria-labelledby': id }, h('h2', { id, text: title }), ...content);
}

/**
 * Re-render `container` with `render`, keeping the keyboard focus on the
 * equivalent control (same row `data-key`, same tag and label) when it was
 * inside: live refreshes must not throw the focus out of a table.
 * @param {Element} container
 * @param {() => void} render
 */
export function keepFocus(container, render) {
  const active = document.activeElement;
  /** @type {{row: string | null, tag: string, label: string} | null} */
  let was = null;
  if (active && active !== container && container.contains(active)) {
    was = {
      row: active.closest('[data-key]')?.getAttribute('data-key') ?? null,
      tag: active.tagName,
      label: active.getAttribute('aria-label') ?? active.textContent ?? '',
    };
  }
  render();
  if (!was) return;
  const { row, tag, label } = was;
  for (const el of container.querySelectorAll(tag)) {
    const key = el.closest('[data-key]')?.getAttribute('data-key') ?? null;
    if (key === row && (el.getAttribute('aria-label') ?? el.textContent ?? '') === label) {
      /** @type {HTMLElement} */ (el).focus();
      return;
    }
  }
}
