// Sessions: the sessions this identity may see (`session.list`; admins see
// all), refreshed on every presence tick; one session's record, members,
// logged history (`session.history`) and, once joined, its live events.

import { field, fill, h, json, keepFocus, notice, pill, section, table, timeEl } from '../dom.js';
import { WRITE, describe, matches, parseJson } from '../util.js';

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 */
export function mount(ctx, root) {
  const filter = /** @type {HTMLInputElement} */ (h('input', { type: 'search', name: 'filter', placeholder: 'id or identity' }));
  const list = h('div', { 'data-testid': 'sessions' });
  const message = h('div');
  const detail = h('div', { class: 'detail' });
  /** @type {any[]} */
  let sessions = [];
  filter.addEventListener('input', () => render());
  root.append(
    h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter sessions', onsubmit: (/** @type {Event} */ e) => e.preventDefault() }, field('Filter', filter)),
    message,
    list,
    detail,
  );

  const refresh = async () => {
    try {
      const reply = await ctx.call('session.list');
      if (!ctx.alive) return;
      sessions = reply.sessions;
      message.replaceChildren();
      render();
    } catch (e) {
      if (ctx.alive) message.replaceChildren(notice('error', `Could not list sessions: ${describe(e)}`));
    }
  };

  const render = () => {
    const needle = filter.value.trim();
    const rows = sessions
      .filter((s) => matches(s.sessionId, needle) || matches(s.ownerIdentity, needle) || s.memberIdentities.some((/** @type {string} */ m) => matches(m, needle)))
      .sort((a, b) => b.createdAt - a.createdAt);
    keepFocus(list, () =>
      fill(
        list,
        table(
          [
            ['Session', (s) => link(ctx, s.sessionId)],
            ['Owner', (s) => h('span', {}, s.ownerIdentity, s.owner === null ? pill('away', 'warn') : null)],
            ['Members', (s) => `${s.members.length} / ${s.maxMembers}`],
            ['Open', (s) => (s.open ? 'yes' : 'no')],
            ['Version', (s) => String(s.version)],
            ['Created', (s) => timeEl(s.createdAt)],
          ],
          rows,
          { empty: sessions.length ? 'No session matches.' : 'No session visible to this identity.', key: (s) => s.sessionId },
        ),
      ),
    );
  };

  ctx.onTick(() => void refresh());
  void refresh();
  if (ctx.param) detailView(ctx, detail, ctx.param);
}

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {string} id
 */
function link(ctx, id) {
  const href = `/sessions/${encodeURIComponent(id)}`;
  return h(
    'a',
    {
      href,
      'aria-current': ctx.param === id ? 'true' : null,
      onclick: (/** @type {MouseEvent} */ e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
        e.preventDefault();
        ctx.navigate(href);
      },
    },
    h('code', { text: id }),
  );
}

/**
 * One session: record, members, history and the live stream.
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 * @param {string} sessionId
 */
function detailView(ctx, root, sessionId) {
  const record = h('div');
  const history = h('div', { 'data-testid': 'session-history' });
  const live = h('div');
  const events = h('ol', { class: 'events', 'aria-live': 'polite', 'data-testid': 'session-live' });
  root.append(
    section(`Session ${sessionId}`, record),
    section('History', history),
    section('Live events', live, events),
  );

  /** @type {import('../../../clients/js/src/session.js').Session | null} */
  let joined = null;
  ctx.cleanup(() => {
    if (joined?.active) void joined.leave().catch(() => {});
  });

  const loadRecord = async () => {
    try {
      const s = await ctx.call('session.get', { sessionId });
      if (!ctx.alive) return;
      const members = s.members.map((/** @type {string} */ conn, /** @type {number} */ i) => ({ conn, identity: s.memberIdentities[i] }));
      fill(
        record,
        h(
          'dl',
          { class: 'facts' },
          h('dt', { text: 'Owner' }),
          h('dd', {}, s.ownerIdentity, ' ', s.owner ? h('code', { class: 'id', text: s.owner }) : pill(`away since ${new Date(s.detachedAt).toLocaleTimeString()}`, 'warn')),
          h('dt', { text: 'Open to writers' }),
          h('dd', { text: s.open ? 'yes' : 'no (owner, members, invited, admins)' }),
          h('dt', { text: 'Invited' }),
          h('dd', { text: s.invited.length ? s.invited.join(', ') : '—' }),
          h('dt', { text: 'Version' }),
          h('dd', { text: String(s.version) }),
          h('dt', { text: 'Created' }),
          h('dd', {}, timeEl(s.createdAt)),
          h('dt', { text: 'Updated' }),
          h('dd', {}, timeEl(s.updatedAt)),
        ),
        h('h3', { text: `Members (${members.length} of at most ${s.maxMembers})` }),
        table(
          [
            ['Identity', (m) => m.identity],
            ['Connection', (m) => h('code', { class: 'id', text: m.conn }, m.conn === s.owner ? pill('owner', 'info') : null, m.conn === ctx.client.connId ? pill('you', 'info') : null)],
          ],
          members,
          { empty: 'No member connected.' },
        ),
        h('h3', { text: 'Metadata' }),
        json(s.meta),
      );
    } catch (e) {
      if (ctx.alive) fill(record, notice('error', `Could not read session ${sessionId}: ${describe(e)}`));
    }
  };

  let since = 0;
  const loadHistory = async () => {
    try {
      const r = await ctx.call('session.history', { sessionId, since, limit: 100 });
      if (!ctx.alive) return;
      fill(
        history,
        r.complete ? null : notice('warn', 'Events before these were trimmed from the log or lost.'),
        h('ol', { class: 'events' }, r.events.map((/** @type {any} */ ev) => eventItem(ev))),
        r.events.length === 0 ? h('p', { class: 'empty', text: 'No event logged after this offset.' }) : null,
        h(
          'div',
          { class: 'pager' },
          h('span', { text: `Offsets ${since + 1}–${r.events.at(-1)?.offset ?? since}; newest ${r.latest}.` }),
          h('button', { type: 'button', class: 'secondary', disabled: since === 0, onclick: () => ((since = 0), void loadHistory()) }, 'From the start'),
          h(
            'button',
            { type: 'button', class: 'secondary', disabled: !r.more, onclick: () => ((since = r.events.at(-1)?.offset ?? since), void loadHistory()) },
            'Newer →',
          ),
        ),
      );
    } catch (e) {
      if (ctx.alive) fill(history, notice('error', `Could not read the history: ${describe(e)}`));
    }
  };

  const liveControls = () => {
    if (!ctx.can('operator.write')) {
      fill(live, ctx.needs(WRITE, 'Watching live (joining the session)'));
      return;
    }
    if (!joined) {
      fill(
        live,
        h('p', { class: 'hint', text: 'Watching joins this connection to the session as a member; it leaves when you stop or leave this page.' }),
        h(
          'button',
          {
            type: 'button',
            onclick: async () => {
              try {
                const latest = (await ctx.call('session.history', { sessionId, since: 0, limit: 1 })).latest;
                joined = await ctx.client.joinSession(sessionId, { since: latest, onEvent: (ev) => events.append(eventItem(ev)) });
                joined.on('updated', () => void loadRecord());
                joined.on('closed', (p) => {
                  events.append(h('li', { class: 'event event-closed', text: `Session closed: ${p.reason}` }));
                  joined = null;
                  liveControls();
                });
                void loadRecord();
                liveControls();
              } catch (e) {
                fill(live, notice('error', `Could not join: ${describe(e)}`));
              }
            },
          },
          'Watch live',
        ),
      );
      return;
    }
    const eventName = /** @type {HTMLInputElement} */ (h('input', { type: 'text', name: 'event', value: 'note', required: true }));
    const data = /** @type {HTMLTextAreaElement} */ (h('textarea', { name: 'data', rows: '3', spellcheck: 'false' }, '{"text": "hello"}'));
    const result = h('div', { 'aria-live': 'polite' });
    fill(
      live,
      h('p', {}, pill('watching', 'ok'), ' New events appear below as members send them.'),
      h(
        'button',
        {
          type: 'button',
          class: 'secondary',
          onclick: async () => {
            const s = joined;
            joined = null;
            await s?.leave().catch(() => {});
            liveControls();
            void loadRecord();
          },
        },
        'Stop watching',
      ),
      h(
        'form',
        {
          class: 'inline-form',
          'aria-label': 'Send an event to the session',
          onsubmit: async (/** @type {Event} */ e) => {
            e.preventDefault();
            try {
              const payload = data.value.trim() ? parseJson(data.value, 'Data') : null;
              const sent = await joined?.send(eventName.value.trim(), payload);
              result.replaceChildren(notice('ok', `Sent as offset ${sent?.offset}, delivered to ${sent?.delivered}.`));
            } catch (err) {
              result.replaceChildren(notice('error', describe(err)));
            }
          },
        },
        field('Event', eventName),
        field('Data (JSON)', data),
        h('button', { type: 'submit' }, 'Send'),
        result,
      ),
    );
  };

  void loadRecord();
  void loadHistory();
  liveControls();
}

/** @param {any} ev a `session.event` or `agent.event` (history or live) */
function eventItem(ev) {
  const agent = ev.method === 'agent.event';
  return h(
    'li',
    { class: `event ${agent ? 'event-agent' : ''}` },
    h(
      'div',
      { class: 'event-head' },
      h('span', { class: 'offset', text: `#${ev.offset}` }),
      agent ? pill(`agent ${ev.agentId ?? ''} · ${ev.type}`, 'info') : h('strong', { text: ev.event }),
      agent ? h('span', { class: 'muted', text: `run ${ev.runId}` }) : h('span', { class: 'muted', text: `from ${ev.from?.identity ?? '?'}` }),
      timeEl(ev.timestamp),
    ),
    json(ev.data),
  );
}
