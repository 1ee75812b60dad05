// Clients: every connection of the cluster (`clients.list`, read page by
// page), filtered by identity, role and instance, shown a page at a time;
// `client.kick` closes one wherever it is. Refreshed on every presence tick.

import { duration, field, fill, h, keepFocus, notice, pill, table, timeEl } from '../dom.js';
import { describe, matches } from '../util.js';

/** Entries asked per `clients.list` call, and the most loaded per refresh. */
const BATCH = 1000;
const MAX_LOADED = 5000;
/** Rows per page. */
const PAGE = 50;

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 */
export function mount(ctx, root) {
  /** @type {any[]} */
  let all = [];
  let total = 0;
  let page = 0;
  /** Connections kicked from here: hidden until the list no longer has them. */
  const kicked = new Set();
  /** A kick being confirmed: live refreshes wait until it is done. */
  let confirming = false;

  const identity = /** @type {HTMLInputElement} */ (h('input', { type: 'search', name: 'identity', placeholder: 'any' }));
  const role = /** @type {HTMLSelectElement} */ (
    h('select', { name: 'role' }, h('option', { value: '', text: 'any' }), ['operator', 'node', 'unauthenticated'].map((r) => h('option', { value: r, text: r })))
  );
  const instance = /** @type {HTMLSelectElement} */ (h('select', { name: 'instance' }, h('option', { value: '', text: 'any' })));
  const info = h('p', { class: 'hint', 'aria-live': 'polite' });
  const list = h('div', { 'data-testid': 'clients' });
  const pager = h('div', { class: 'pager' });
  const message = h('div');
  for (const input of [identity, role, instance]) {
    input.addEventListener('input', () => {
      page = 0;
      render();
    });
  }
  root.append(
    h(
      'form',
      { class: 'filters', role: 'search', 'aria-label': 'Filter clients', onsubmit: (/** @type {Event} */ e) => e.preventDefault() },
      field('Identity', identity),
      field('Role', role),
      field('Instance', instance),
      h('button', { type: 'button', class: 'secondary', onclick: () => void refresh() }, 'Refresh'),
    ),
    message,
    info,
    list,
    pager,
  );

  let busy = false;
  const refresh = async () => {
    if (busy) return;
    busy = true;
    try {
      /** @type {any[]} */
      const loaded = [];
      /** @type {string | null} */
      let cursor = null;
      do {
        /** @type {any} */
        const reply = await ctx.call('clients.list', cursor ? { limit: BATCH, cursor } : { limit: BATCH });
        loaded.push(...reply.clients);
        total = reply.total;
        cursor = reply.nextCursor;
      } while (cursor && loaded.length < MAX_LOADED);
      if (!ctx.alive) return;
      all = loaded;
      for (const id of [...kicked]) if (!all.some((c) => c.connId === id)) kicked.delete(id);
      const instances = [...new Set(all.map((c) => c.nodeId))].sort();
      const chosen = instance.value;
      fill(instance, h('option', { value: '', text: 'any' }), instances.map((i) => h('option', { value: i, text: i, selected: i === chosen })));
      if (!confirming) render();
    } catch (e) {
      if (ctx.alive) message.replaceChildren(notice('error', `Could not list clients: ${describe(e)}`));
    } finally {
      busy = false;
    }
  };

  const render = () => {
    confirming = false;
    const now = Date.now();
    const wantRole = role.value;
    const rows = all.filter(
      (c) =>
        !kicked.has(c.connId) &&
        matches(c.identity, identity.value.trim()) &&
        (!wantRole || (wantRole === 'unauthenticated' ? c.role === null : c.role === wantRole)) &&
        (!instance.value || c.nodeId === instance.value),
    );
    const pages = Math.max(1, Math.ceil(rows.length / PAGE));
    page = Math.min(page, pages - 1);
    const shown = rows.slice(page * PAGE, page * PAGE + PAGE);
    info.textContent =
      `${total} connection${total === 1 ? '' : 's'} in the cluster; ${rows.length} match` +
      (all.length < total ? ` among the first ${all.length} loaded` : '') +
      '.';
    keepFocus(list, () =>
      fill(
      list,
      table(
        [
          ['Identity', (c) => (c.identity === null ? pill('unauthenticated', 'muted') : h('span', { text: c.identity }))],
          ['Role', (c) => c.role ?? '—'],
          ['Client', (c) => clientName(c.client)],
          ['Instance', (c) => h('code', { text: c.nodeId })],
          ['Connection', (c) => h('code', { class: 'id', text: c.connId }, c.connId === ctx.client.connId ? pill('you', 'info') : null)],
          ['Connected', (c) => h('span', { title: new Date(c.connectedAt).toISOString() }, duration(now - c.connectedAt), ' ago')],
          ['Last seen', (c) => timeEl(c.lastSeen)],
          ['', (c) => kickControl(c)],
        ],
        shown,
        {
          empty: all.length ? 'No client matches the filter.' : 'No client connected.',
          rowAttrs: (c) => ({ 'data-conn': c.connId }),
          key: (c) => c.connId,
        },
      ),
    ));
    fill(
      pager,
      h('button', { type: 'button', class: 'secondary', disabled: page === 0, onclick: () => ((page -= 1), render()) }, '← Previous'),
      h('span', { text: `Page ${page + 1} of ${pages}` }),
      h('button', { type: 'button', class: 'secondary', disabled: page >= pages - 1, onclick: () => ((page += 1), render()) }, 'Next →'),
    );
  };

  /** A Kick button that asks for a reason and a confirmation first. @param {any} c */
  const kickControl = (c) => {
    const wrap = h('div', { class: 'inline-actions' });
    const label = c.identity ?? c.connId;
    const start = h('button', { type: 'button', class: 'danger', 'aria-label': `Kick ${label}`, onclick: () => confirm() }, 'Kick');
    const cancel = () => {
      confirming = false;
      fill(wrap, start);
      start.focus();
      render();
    };
    const confirm = () => {
      confirming = true;
      const reason = /** @type {HTMLInputElement} */ (h('input', { type: 'text', name: 'reason', value: 'kicked by an operator', maxlength: '100' }));
      const yes = h(
        'button',
        {
          type: 'button',
          class: 'danger',
          onclick: async () => {
            try {
              await ctx.call('client.kick', { connId: c.connId, reason: reason.value.trim() || undefined });
              kicked.add(c.connId);
              confirming = false;
              message.replaceChildren(notice('ok', `Kicked ${label} (${c.connId}).`));
              render();
            } catch (e) {
              message.replaceChildren(notice('error', `Could not kick ${label}: ${describe(e)}`));
              cancel();
            }
          },
        },
        'Confirm kick',
      );
      fill(wrap, field('Reason', reason), yes, h('button', { type: 'button', class: 'secondary', onclick: cancel }, 'Cancel'));
      reason.focus();
    };
    return fill(wrap, start);
  };

  ctx.onTick(() => void refresh());
  void refresh();
}

/** @param {any} client */
function clientName(client) {
  if (!client || typeof client !== 'object') return '—';
  const parts = [client.name, client.version, client.platform].filter((p) => typeof p === 'string' && p);
  return parts.length ? parts.join(' ') : '—';
}
