// A form generated from a tool's JSON Schema: strings, numbers, integers,
// booleans, enums, nested objects and arrays of scalars get real controls;
// anything else (oneOf, arrays of objects, $ref, no schema) a JSON text
// area. The whole form can be switched to raw JSON as well.

import { h, uid } from './dom.js';

/**
 * @typedef {{path: string, message: string, el?: HTMLElement}} FieldError
 * @typedef {{present: boolean, value?: unknown, errors: FieldError[]}} Reading
 * @typedef {{element: HTMLElement, read: () => Reading}} Built
 */

/**
 * The type a schema describes, as this form handles it.
 * @param {any} s
 * @returns {string | null} `enum`, `const`, a JSON type, or null
 */
export function kindOf(s) {
  if (!s || typeof s !== 'object') return null;
  if (Array.isArray(s.enum) && s.enum.length > 0) return 'enum';
  if ('const' in s) return 'const';
  let t = s.type;
  if (Array.isArray(t)) {
    const notNull = t.filter((x) => x !== 'null');
    t = notNull.length === 1 ? notNull[0] : null;
  }
  if (!t && s.properties && typeof s.properties === 'object') t = 'object';
  return typeof t === 'string' ? t : null;
}

const SCALARS = new Set(['string', 'number', 'integer', 'boolean', 'enum']);

/**
 * Whether the schema gets a generated form (an object with properties).
 * @param {any} schema
 */
export function hasForm(schema) {
  return kindOf(schema) === 'object' && schema.properties && Object.keys(schema.properties).length > 0;
}

/**
 * @param {any} schema the tool's `parameters`
 * @param {{initial?: unknown}} [options]
 * @returns {{element: HTMLElement, read: () => {value: unknown, errors: FieldError[]}}}
 */
export function schemaForm(schema, options = {}) {
  const errorsBox = h('div', { class: 'form-errors', role: 'alert' });
  const raw = /** @type {HTMLTextAreaElement} */ (
    h('textarea', { class: 'json-input', rows: '8', spellcheck: 'false', 'aria-label': 'Arguments as JSON' }, JSON.stringify(options.initial ?? {}, null, 2))
  );
  const formMode = hasForm(schema);
  const built = formMode ? objectFields(schema, '', true) : null;
  const rawBox = h('div', { class: 'raw-json', hidden: formMode }, raw, h('small', { class: 'hint', text: formMode ? 'Sent as written.' : 'This tool has no schema the form can show: write its arguments as JSON.' }));
  const formBox = built ? h('div', { class: 'generated' }, built.element) : null;
  let rawMode = !formMode;

  const toggle = formMode
    ? h(
        'button',
        {
          type: 'button',
          class: 'secondary small',
          'aria-pressed': 'false',
          onclick: () => {
            rawMode = !rawMode;
            if (rawMode && built) {
              const r = built.read();
              raw.value = JSON.stringify(r.value ?? {}, null, 2);
            }
            rawBox.hidden = !rawMode;
            if (formBox) formBox.hidden = rawMode;
            toggle?.setAttribute('aria-pressed', String(rawMode));
            if (toggle) toggle.textContent = rawMode ? 'Back to the form' : 'Edit as JSON';
          },
        },
        'Edit as JSON',
      )
    : null;

  const element = h('div', { class: 'schema-form' }, toggle, formBox, rawBox, errorsBox);

  const read = () => {
    for (const el of element.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    /** @type {{value: unknown, errors: FieldError[]}} */
    let out;
    if (rawMode || !built) {
      const text = raw.value.trim();
      try {
        out = { value: text === '' ? {} : JSON.parse(text), errors: [] };
      } catch (e) {
        out = { value: undefined, errors: [{ path: '(JSON)', message: /** @type {Error} */ (e).message, el: raw }] };
      }
    } else {
      const r = built.read();
      out = { value: r.value ?? {}, errors: r.errors };
    }
    errorsBox.replaceChildren();
    if (out.errors.length) {
      errorsBox.append(
        h('p', { text: 'Fix these fields:' }),
        h('ul', {}, out.errors.map((e) => h('li', { text: `${e.path || '(arguments)'}: ${e.message}` }))),
      );
      for (const e of out.errors) e.el?.setAttribute('aria-invalid', 'true');
      out.errors[0].el?.focus();
    }
    return out;
  };
  return { element, read };
}

/**
 * The fields of an object schema.
 * @param {any} schema
 * @param {string} path
 * @param {boolean} required present even when every field is empty
 * @returns {Built}
 */
function objectFields(schema, path, required) {
  const need = new Set(Array.isArray(schema.required) ? schema.required : []);
  // Required fields first, each group in the schema's order.
  const entries = Object.entries(/** @type {Record<string, any>} */ (schema.properties ?? {})).sort(
    ([a], [b]) => Number(need.has(b)) - Number(need.has(a)),
  );
  const fields = entries.map(([name, sub]) => ({ name, built: build(sub ?? {}, path ? `${path}.${name}` : name, need.has(name), name) }));
  const element = h('div', { class: 'fields' }, fields.map((f) => f.built.element));
  return {
    element,
    read: () => {
      /** @type {Record<string, unknown>} */
      const value = {};
      /** @type {FieldError[]} */
      const errors = [];
      let any = false;
      for (const f of fields) {
        const r = f.built.read();
        errors.push(...r.errors);
        if (r.present) {
          value[f.name] = r.value;
          any = true;
        }
      }
      return { present: any || required, value, errors };
    },
  };
}

/**
 * One field for `schema` at `path`.
 * @param {any} schema
 * @param {string} path
 * @param {boolean} required
 * @param {string} name
 * @returns {Built}
 */
function build(schema, path, required, name) {
  const kind = kindOf(schema);
  const label = `${schema.title ?? name}${required ? ' *' : ''}`;
  const hint = typeof schema.description === 'string' ? schema.description : undefined;
  if (kind === 'object' && schema.properties && Object.keys(schema.properties).length > 0) {
    const inner = objectFields(schema, path, required);
    return {
      element: h('fieldset', { class: 'nested' }, h('legend', { text: label }), hint ? h('small', { class: 'hint', text: hint }) : null, inner.element),
      read: inner.read,
    };
  }
  if (kind === 'array' && SCALARS.has(kindOf(schema.items) ?? '')) return arrayField(schema, path, required, label, hint);
  if (kind && SCALARS.has(kind)) {
    const control = scalar(schema, kind, path, required);
    return labelled(label, hint, control, kind === 'boolean');
  }
  if (kind === 'const') return { element: h('div', { hidden: true }), read: () => ({ present: true, value: schema.const, errors: [] }) };
  return jsonField(schema, path, required, label, hint);
}

/**
 * @typedef {{el: HTMLElement, read: () => Reading}} Control
 */

/**
 * @param {string} label
 * @param {string | undefined} hint
 * @param {Control} control
 * @param {boolean} inline checkbox layout
 * @returns {Built}
 */
function labelled(label, hint, control, inline) {
  const id = control.el.id || uid('sf');
  control.el.id = id;
  const hintEl = hint ? h('small', { class: 'hint', id: `${id}-hint`, text: hint }) : null;
  if (hintEl) control.el.setAttribute('aria-describedby', hintEl.id);
  const element = inline
    ? h('div', { class: 'field check' }, control.el, h('label', { for: id, text: label }), hintEl)
    : h('div', { class: 'field' }, h('label', { for: id, text: label }), control.el, hintEl);
  return { element, read: control.read };
}

/**
 * A control for a scalar schema.
 * @param {any} schema
 * @param {string} kind
 * @param {string} path
 * @param {boolean} required
 * @returns {Control}
 */
function scalar(schema, kind, path, required) {
  const dflt = schema.default;
  if (kind === 'enum') {
    /** @type {unknown[]} */
    const values = schema.enum;
    const select = /** @type {HTMLSelectElement} */ (
      h(
        'select',
        { required },
        required ? null : h('option', { value: '', text: '(not set)' }),
        values.map((v, i) => h('option', { value: String(i), text: typeof v === 'string' ? v : JSON.stringify(v), selected: dflt !== undefined && JSON.stringify(dflt) === JSON.stringify(v) })),
      )
    );
    return {
      el: select,
      read: () => (select.value === '' ? absent(required, path, select) : { present: true, value: values[Number(select.value)], errors: [] }),
    };
  }
  if (kind === 'boolean') {
    const box = /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', checked: dflt === true }));
    return { el: box, read: () => ({ present: true, value: box.checked, errors: [] }) };
  }
  if (kind === 'number' || kind === 'integer') {
    const input = /** @type {HTMLInputElement} */ (
      h('input', {
        type: 'number',
        step: kind === 'integer' ? '1' : 'any',
        min: schema.minimum ?? null,
        max: schema.maximum ?? null,
        required,
        value: typeof dflt === 'number' ? String(dflt) : null,
      })
    );
    return {
      el: input,
      read: () => {
        const text = input.value.trim();
        if (text === '') return input.validity.badInput ? bad(path, 'not a number', input) : absent(required, path, input);
        const n = Number(text);
        if (!Number.isFinite(n)) return bad(path, 'not a number', input);
        if (kind === 'integer' && !Number.isInteger(n)) return bad(path, 'must be a whole number', input);
        if (typeof schema.minimum === 'number' && n < schema.minimum) return bad(path, `at least ${schema.minimum}`, input);
        if (typeof schema.maximum === 'number' && n > schema.maximum) return bad(path, `at most ${schema.maximum}`, input);
        return { present: true, value: n, errors: [] };
      },
    };
  }
  // string
  const long = (schema.maxLength ?? 0) > 200 || schema.format === 'textarea';
  const input = /** @type {HTMLInputElement} */ (
    h(long ? 'textarea' : 'input', {
      type: long ? null : 'text',
      rows: long ? '3' : null,
      required,
      minlength: schema.minLength ?? null,
      maxlength: schema.maxLength ?? null,
      placeholder: schema.examples?.[0] !== undefined ? String(schema.examples[0]) : null,
      value: typeof dflt === 'string' ? dflt : null,
    })
  );
  return {
    el: input,
    read: () => {
      const text = input.value;
      if (text === '') return absent(required, path, input);
      if (typeof schema.minLength === 'number' && text.length < schema.minLength) return bad(path, `at least ${schema.minLength} characters`, input);
      if (typeof schema.maxLength === 'number' && text.length > schema.maxLength) return bad(path, `at most ${schema.maxLength} characters`, input);
      if (typeof schema.pattern === 'string') {
        let re = null;
        try {
          re = new RegExp(schema.pattern, 'u');
        } catch {
          // a pattern this browser cannot read: leave it to the agent
        }
        if (re && !re.test(text)) return bad(path, `must match ${schema.pattern}`, input);
      }
      return { present: true, value: text, errors: [] };
    },
  };
}

/**
 * A list of scalar items with add and remove buttons.
 * @param {any} schema
 * @param {string} path
 * @param {boolean} required
 * @param {string} label
 * @param {string | undefined} hint
 * @returns {Built}
 */
function arrayField(schema, path, required, label, hint) {
  const itemKind = /** @type {string} */ (kindOf(schema.items));
  const list = h('ol', { class: 'array-items' });
  /** @type {Array<{li: HTMLElement, control: Control}>} */
  const items = [];
  const add = (/** @type {unknown} */ initial) => {
    const control = scalar({ ...schema.items, default: initial ?? schema.items.default }, itemKind, path, true);
    const li = h('li', {}, control.el);
    const remove = h(
      'button',
      {
        type: 'button',
        class: 'secondary small',
        onclick: () => {
          const at = items.findIndex((i) => i.li === li);
          if (at >= 0) items.splice(at, 1);
          li.remove();
          renumber();
          addButton.focus();
        },
      },
      'Remove',
    );
    li.append(remove);
    items.push({ li, control });
    list.append(li);
    renumber();
    return control;
  };
  const renumber = () =>
    items.forEach((item, i) => {
      item.control.el.setAttribute('aria-label', `${label.replace(/ \*$/, '')} item ${i + 1}`);
      item.li.querySelector('button')?.setAttribute('aria-label', `Remove item ${i + 1}`);
    });
  const addButton = h('button', { type: 'button', class: 'secondary small', onclick: () => add(undefined).el.focus() }, 'Add item');
  if (Array.isArray(schema.default)) for (const v of schema.default) add(v);
  const element = h('fieldset', { class: 'nested array' }, h('legend', { text: label }), hint ? h('small', { class: 'hint', text: hint }) : null, list, addButton);
  return {
    element,
    read: () => {
      /** @type {FieldError[]} */
      const errors = [];
      const value = [];
      items.forEach((item, i) => {
        const r = item.control.read();
        for (const e of r.errors) errors.push({ ...e, path: `${path}[${i}]` });
        if (r.present) value.push(r.value);
      });
      if (typeof schema.minItems === 'number' && value.length < schema.minItems && (required || value.length > 0)) {
        errors.push({ path, message: `at least ${schema.minItems} items`, el: addButton });
      }
      if (typeof schema.maxItems === 'number' && value.length > schema.maxItems) errors.push({ path, message: `at most ${schema.maxItems} items`, el: addButton });
      if (value.length === 0 && !required) return { present: false, errors };
      return { present: true, value, errors };
    },
  };
}

/**
 * A JSON text area for what the form cannot show.
 * @param {any} schema
 * @param {string} path
 * @param {boolean} required
 * @param {string} label
 * @param {string | undefined} hint
 * @returns {Built}
 */
function jsonField(schema, path, required, label, hint) {
  const area = /** @type {HTMLTextAreaElement} */ (
    h('textarea', { class: 'json-input', rows: '3', spellcheck: 'false' }, schema.default === undefined ? '' : JSON.stringify(schema.default, null, 2))
  );
  const control = {
    el: area,
    read: () => {
      const text = area.value.trim();
      if (text === '') return absent(required, path, area);
      try {
        return { present: true, value: JSON.parse(text), errors: [] };
      } catch {
        return bad(path, 'not valid JSON', area);
      }
    },
  };
  return labelled(`${label} (JSON)`, hint, control, false);
}

/**
 * @param {boolean} required
 * @param {string} path
 * @param {HTMLElement} el
 * @returns {Reading}
 */
function absent(required, path, el) {
  return required ? bad(path, 'required', el) : { present: false, errors: [] };
}

/**
 * @param {string} path
 * @param {string} message
 * @param {HTMLElement} el
 * @returns {Reading}
 */
function bad(path, message, el) {
  return { present: false, errors: [{ path, message, el }] };
}
