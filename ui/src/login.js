// The login form: a token, an API key or the operator password, sent
// in-band by the client (never in the URL); kept in sessionStorage only
// when "remember for this tab" is ticked.

import { field, h, notice } from './dom.js';

/** [value, radio label, the secret field's label] */
const KINDS = [
  ['token', 'Token', 'Your token (a static token or a JWT)'],
  ['apiKey', 'API key', 'Your API key'],
  ['password', 'Password', 'The operator password'],
];

/**
 * @param {{message?: string, submit: (kind: string, secret: string, remember: boolean) => Promise<string | null>}} options
 */
export function loginForm(options) {
  const secret = /** @type {HTMLInputElement} */ (
    h('input', { type: 'password', name: 'secret', autocomplete: 'current-password', required: true, spellcheck: 'false' })
  );
  const remember = /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', id: 'remember', name: 'remember' }));
  const error = h('div', { class: 'login-message', 'aria-live': 'assertive' });
  const submit = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit', text: 'Log in' }));
  const secretField = field(KINDS[0][2], secret);
  const label = /** @type {HTMLLabelElement} */ (secretField.querySelector('label'));

  const radios = KINDS.map(([value, text, fieldLabel], i) =>
    h(
      'label',
      { class: 'radio' },
      h('input', {
        type: 'radio',
        name: 'kind',
        value,
        checked: i === 0,
        onchange: () => {
          label.textContent = fieldLabel;
        },
      }),
      ` ${text}`,
    ),
  );

  if (options.message) {
    const bad = !/^Logged out/.test(options.message);
    error.append(notice(bad ? 'error' : 'info', options.message));
  }

  const form = h(
    'form',
    {
      class: 'login-form',
      'aria-labelledby': 'login-title',
      onsubmit: async (/** @type {SubmitEvent} */ e) => {
        e.preventDefault();
        const kind = /** @type {HTMLInputElement | null} */ (form.querySelector('input[name=kind]:checked'))?.value ?? 'token';
        const value = secret.value.trim();
        if (!value) {
          error.replaceChildren(notice('error', 'Enter a credential.'));
          secret.focus();
          return;
        }
        submit.disabled = true;
        submit.textContent = 'Logging in…';
        error.replaceChildren();
        const failed = await options.submit(kind, value, remember.checked);
        // On success the page has moved on; this form is gone.
        if (failed) {
          submit.disabled = false;
          submit.textContent = 'Log in';
          error.replaceChildren(notice('error', failed));
          secret.select();
          secret.focus();
        }
      },
    },
    h('fieldset', { class: 'kinds' }, h('legend', { text: 'Log in with' }), radios),
    secretField,
    h('div', { class: 'field check' }, remember, h('label', { for: 'remember', text: 'Remember for this tab' })),
    h('p', { class: 'hint', text: 'Sent over the WebSocket once connected, never in an address. Remembered credentials stay in this tab only and are gone when it closes.' }),
    submit,
    error,
  );

  queueMicrotask(() => secret.focus());
  return h('main', { class: 'login', id: 'main' }, h('h1', { id: 'login-title', text: 'Switchyard control' }), form);
}
