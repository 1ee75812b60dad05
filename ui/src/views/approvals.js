// Approvals: the pending queue, kept live by `approval.requested` /
// `approval.resolved` pushes (the app holds it for the nav's counter),
// approve or deny with a note (`approval.resolve`: the first decision wins
// cluster-wide), and the audit trail (`approval.history`).

import { duration, fill, h, json, notice, pill, section, table, timeEl, uid } from '../dom.js';
import { describe } from '../util.js';

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 */
export function mount(ctx, root) {
  const store = ctx.app.approvals;
  const queue = h('div', { class: 'queue', 'data-testid': 'approval-queue' });
  const trail = h('div', { 'data-testid': 'approval-history' });
  const message = h('div', { 'aria-live': 'polite' });
  root.append(message, section('Pending', queue), section('Audit trail', h('p', { class: 'hint', text: 'Who decided what, when, with which note; newest first.' }), trail));

  /** approvalId → its card, kept across updates so a note being typed survives. */
  const cards = new Map();

  const renderQueue = () => {
    const pending = [...store.items.values()].sort((a, b) => a.createdAt - b.createdAt);
    const ids = new Set(pending.map((a) => a.approvalId));
    for (const [id, card] of cards) {
      if (!ids.has(id)) {
        card.remove();
        cards.delete(id);
      }
    }
    queue.querySelector('.empty')?.remove();
    for (const approval of pending) {
      if (!cards.has(approval.approvalId)) {
        const card = approvalCard(ctx, approval, message, () => void loadTrail());
        cards.set(approval.approvalId, card);
        queue.append(card);
      }
    }
    if (pending.length === 0) queue.append(h('p', { class: 'empty', text: 'Nothing is waiting for a decision.' }));
  };

  const loadTrail = async () => {
    try {
      const r = await ctx.call('approval.history', { limit: 100 });
      if (!ctx.alive) return;
      fill(
        trail,
        table(
          [
            ['Decision', (a) => statusPill(a.status)],
            ['Tool', (a) => h('code', { text: a.tool })],
            ['Summary', (a) => a.summary || '—'],
            ['Requested by', (a) => a.requester],
            ['Decided by', (a) => a.decidedBy ?? (a.status === 'expired' ? '(expired)' : '—')],
            ['When', (a) => timeEl(a.resolvedAt)],
            ['Note', (a) => a.note ?? '—'],
          ],
          r.entries,
          { empty: 'No decision recorded yet.', rowAttrs: (a) => ({ 'data-approval': a.approvalId }) },
        ),
      );
    } catch (e) {
      if (ctx.alive) fill(trail, notice('error', `Could not read the audit trail: ${describe(e)}`));
    }
  };

  ctx.cleanup(store.subscribe(renderQueue));
  ctx.on('approval.resolved', () => void loadTrail());
  // Count-downs to expiry follow the presence tick.
  ctx.onTick(() => {
    for (const card of cards.values()) card.dispatchEvent(new Event('tick'));
  });
  renderQueue();
  void loadTrail();
  // The queue as the gateway has it now (pushes keep it current after).
  void ctx
    .call('approval.list')
    .then((r) => store.replace(r.approvals, (a) => a.approvalId))
    .catch((e) => message.replaceChildren(notice('error', `Could not read the queue: ${describe(e)}`)));
}

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {any} a
 * @param {HTMLElement} message
 * @param {() => void} decided
 */
function approvalCard(ctx, a, message, decided) {
  const noteId = uid('note');
  const note = /** @type {HTMLTextAreaElement} */ (h('textarea', { id: noteId, name: 'note', rows: '2', maxlength: '4096' }));
  const expires = h('span', { class: 'expires' });
  const tick = () => {
    const left = a.expiresAt - Date.now();
    expires.textContent = left > 0 ? `expires in ${duration(left)}` : 'expired';
  };
  tick();
  const error = h('div');
  /** @type {HTMLButtonElement[]} */
  const buttons = [];
  const decide = async (/** @type {'approve' | 'deny'} */ decision) => {
    for (const b of buttons) b.disabled = true;
    try {
      const r = await ctx.client.resolveApproval(a.approvalId, decision, note.value.trim() || undefined);
      message.replaceChildren(notice('ok', `${r.status === 'approved' ? 'Approved' : 'Denied'} ${a.tool} (${a.approvalId}).`));
      ctx.app.approvals.remove(a.approvalId);
      decided();
    } catch (e) {
      error.replaceChildren(notice('error', `Not recorded: ${describe(e)}`));
      for (const b of buttons) b.disabled = false;
    }
  };
  buttons.push(
    /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'approve', onclick: () => void decide('approve') }, 'Approve')),
    /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'danger', onclick: () => void decide('deny') }, 'Deny')),
  );
  const titleId = uid('appr');
  const card = h(
    'article',
    { class: 'approval', 'data-approval': a.approvalId, 'aria-labelledby': titleId },
    h('h3', { id: titleId }, h('code', { text: a.tool }), ' ', a.summary ? h('span', { class: 'summary', text: a.summary }) : null),
    h(
      'dl',
      { class: 'facts' },
      h('dt', { text: 'Requested by' }),
      h('dd', {}, a.requester, ' ', h('code', { class: 'id', text: a.requesterConn })),
      h('dt', { text: 'Asked' }),
      h('dd', {}, timeEl(a.createdAt), ' · ', expires),
      a.sessionId ? [h('dt', { text: 'Session' }), h('dd', {}, h('code', { text: a.sessionId }))] : null,
      h('dt', { text: 'Id' }),
      h('dd', {}, h('code', { class: 'id', text: a.approvalId })),
    ),
    h('details', { open: true }, h('summary', { text: 'Arguments' }), json(a.args)),
    h('div', { class: 'field' }, h('label', { for: noteId, text: 'Note (kept in the audit trail)' }), note),
    h('div', { class: 'actions' }, buttons),
    error,
  );
  card.addEventListener('tick', tick);
  return card;
}

/** @param {string} status */
function statusPill(status) {
  const kind = status === 'approved' ? 'ok' : status === 'denied' ? 'bad' : 'muted';
  return pill(status, kind);
}
