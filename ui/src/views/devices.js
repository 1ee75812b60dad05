// Devices: pending pairing requests (live through
// `device.pair.requested` / `device.pair.resolved`), approved as a node or
// as an operator with scopes no wider than the approver's, or rejected;
// paired devices to revoke; the pairing audit trail (`device.history`).

import { field, fill, h, notice, pill, section, table, timeEl, uid } from '../dom.js';
import { APPROVALS, PAIRING, READ, WRITE, describe } from '../util.js';

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 */
export function mount(ctx, root) {
  const pending = h('div', { class: 'queue', 'data-testid': 'device-pending' });
  const known = h('div', { 'data-testid': 'devices' });
  const trail = h('div');
  const message = h('div', { 'aria-live': 'polite' });
  root.append(message, section('Pending pairings', pending), section('Devices', known), section('Audit trail', trail));
  const store = ctx.app.devices;
  /** deviceId → card */
  const cards = new Map();

  const renderPending = () => {
    const items = [...store.items.values()].sort((a, b) => a.requestedAt - b.requestedAt);
    const ids = new Set(items.map((d) => d.deviceId));
    for (const [id, card] of cards) {
      if (!ids.has(id)) {
        card.remove();
        cards.delete(id);
      }
    }
    pending.querySelector('.empty')?.remove();
    for (const d of items) {
      if (!cards.has(d.deviceId)) {
        const card = pendingCard(ctx, d, message, () => void loadAll());
        cards.set(d.deviceId, card);
        pending.append(card);
      }
    }
    if (items.length === 0) pending.append(h('p', { class: 'empty', text: 'No device is waiting to pair.' }));
  };

  const loadAll = async () => {
    try {
      const [list, history] = await Promise.all([ctx.call('device.list'), ctx.call('device.history', { limit: 100 })]);
      if (!ctx.alive) return;
      store.replace(
        list.devices.filter((/** @type {any} */ d) => d.status === 'pending'),
        (d) => d.deviceId,
      );
      const others = list.devices.filter((/** @type {any} */ d) => d.status !== 'pending');
      fill(
        known,
        table(
          [
            ['Device', (d) => h('span', {}, h('strong', { text: d.name }), ' ', h('code', { class: 'id', text: d.deviceId }))],
            ['Platform', (d) => d.platform],
            ['State', (d) => pill(d.status, d.status === 'paired' ? 'ok' : 'muted')],
            ['Role', (d) => (d.role ? `${d.role}${d.scopes.length ? ` (${d.scopes.join(', ')})` : ''}` : '—')],
            ['Decided', (d) => h('span', {}, d.decidedBy ?? '—', ' ', timeEl(d.decidedAt))],
            ['Last seen', (d) => timeEl(d.lastSeen)],
            ['', (d) => (d.status === 'paired' ? revokeControl(ctx, d, message, () => void loadAll()) : '')],
          ],
          others,
          { empty: 'No paired, rejected or revoked device.', rowAttrs: (d) => ({ 'data-device': d.deviceId }) },
        ),
      );
      fill(
        trail,
        table(
          [
            ['What', (e) => e.action],
            ['Device', (e) => h('code', { text: e.deviceId })],
            ['By', (e) => e.by],
            ['When', (e) => timeEl(e.at)],
            ['Role', (e) => (e.role ? `${e.role}${e.scopes?.length ? ` (${e.scopes.join(', ')})` : ''}` : '—')],
            ['Note', (e) => e.note ?? '—'],
          ],
          history.entries,
          { empty: 'Nothing recorded yet.' },
        ),
      );
    } catch (e) {
      if (ctx.alive) message.replaceChildren(notice('error', `Could not list devices: ${describe(e)}`));
    }
  };

  ctx.cleanup(store.subscribe(renderPending));
  for (const push of ['device.pair.requested', 'device.pair.resolved', 'device.revoked']) ctx.on(push, () => void loadAll());
  renderPending();
  void loadAll();
}

/**
 * A pending request: the code to compare, approve (role, scopes) or reject.
 * @param {import('../app.js').ViewContext} ctx
 * @param {any} d
 * @param {HTMLElement} message
 * @param {() => void} done
 */
function pendingCard(ctx, d, message, done) {
  const role = /** @type {HTMLSelectElement} */ (
    h('select', { name: 'role' }, h('option', { value: 'node', text: 'node (an agent or tool runner)' }), h('option', { value: 'operator', text: 'operator' }))
  );
  // An operator device gets scopes no wider than the approver's own.
  const grantable = [READ, WRITE, APPROVALS, PAIRING].filter((s) => ctx.can(s));
  const scopeBoxes = grantable.map((s) => {
    const id = uid('scope');
    return { s, box: /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', id, value: s, checked: s === READ })), id };
  });
  const scopes = h(
    'fieldset',
    { class: 'scopes', hidden: true },
    h('legend', { text: 'Operator scopes' }),
    scopeBoxes.map(({ s, box, id }) => h('span', { class: 'check' }, box, h('label', { for: id, text: s }))),
  );
  role.addEventListener('change', () => {
    scopes.hidden = role.value !== 'operator';
  });
  const note = /** @type {HTMLInputElement} */ (h('input', { type: 'text', name: 'note', maxlength: '4096' }));
  const error = h('div');
  /** @type {HTMLButtonElement[]} */
  const buttons = [];
  const act = async (/** @type {'approve' | 'reject'} */ what) => {
    for (const b of buttons) b.disabled = true;
    try {
      /** @type {any} */
      const params = { deviceId: d.deviceId, note: note.value.trim() || undefined };
      if (what === 'approve') {
        params.role = role.value;
        if (role.value === 'operator') params.scopes = scopeBoxes.filter((x) => x.box.checked).map((x) => x.s);
      }
      const r = await ctx.call(what === 'approve' ? 'device.pair.approve' : 'device.pair.reject', params);
      const reached = r.delivered ? 'the device received the answer' : 'the device was not reached (revoke it and let it ask again)';
      message.replaceChildren(notice(r.delivered ? 'ok' : 'warn', `${what === 'approve' ? 'Approved' : 'Rejected'} ${d.name}: ${reached}.`));
      ctx.app.devices.remove(d.deviceId);
      done();
    } catch (e) {
      error.replaceChildren(notice('error', describe(e)));
      for (const b of buttons) b.disabled = false;
    }
  };
  buttons.push(
    /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'approve', onclick: () => void act('approve') }, 'Approve')),
    /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'danger', onclick: () => void act('reject') }, 'Reject')),
  );
  return h(
    'article',
    { class: 'approval', 'data-device': d.deviceId },
    h('h3', {}, d.name, ' ', h('span', { class: 'muted', text: d.platform })),
    h('p', {}, 'Pairing code ', h('strong', { class: 'code', text: d.code }), ': compare it with the one the device shows.'),
    h(
      'dl',
      { class: 'facts' },
      h('dt', { text: 'Device id' }),
      h('dd', {}, h('code', { text: d.deviceId })),
      h('dt', { text: 'Requested' }),
      h('dd', {}, timeEl(d.requestedAt)),
      h('dt', { text: 'Expires' }),
      h('dd', {}, timeEl(d.expiresAt)),
      h('dt', { text: 'Key' }),
      h('dd', { text: d.publicKey ? 'proves possession of an Ed25519 key' : 'none' }),
    ),
    field('Grant role', role),
    scopes,
    field('Note', note),
    h('div', { class: 'actions' }, buttons),
    error,
  );
}

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {any} d
 * @param {HTMLElement} message
 * @param {() => void} done
 */
function revokeControl(ctx, d, message, done) {
  const wrap = h('div', { class: 'inline-actions' });
  const start = h('button', { type: 'button', class: 'danger', 'aria-label': `Revoke ${d.name}`, onclick: () => confirm() }, 'Revoke');
  const confirm = () => {
    const note = /** @type {HTMLInputElement} */ (h('input', { type: 'text', name: 'note', maxlength: '4096' }));
    fill(
      wrap,
      field('Note', note),
      h(
        'button',
        {
          type: 'button',
          class: 'danger',
          onclick: async () => {
            try {
              await ctx.call('device.revoke', { deviceId: d.deviceId, note: note.value.trim() || undefined });
              message.replaceChildren(notice('ok', `Revoked ${d.name}: its token stopped working and its connections were closed.`));
              done();
            } catch (e) {
              message.replaceChildren(notice('error', `Could not revoke ${d.name}: ${describe(e)}`));
            }
          },
        },
        'Confirm revoke',
      ),
      h('button', { type: 'button', class: 'secondary', onclick: () => (fill(wrap, start), start.focus()) }, 'Cancel'),
    );
    note.focus();
  };
  return fill(wrap, start);
}
