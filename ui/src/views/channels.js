// Channels: those with subscribers that this identity may subscribe to
// (`GET /api/channels`, the credential in a header), refreshed on every
// presence tick; one channel's presence (`presence.get`, live through
// `presence.join` / `presence.leave` while watching), its logged history
// when it keeps one, and a test publication.

import { field, fill, h, json, keepFocus, notice, pill, section, table, timeEl } from '../dom.js';
import { WRITE, describe, parseJson } from '../util.js';

/** Most live messages kept on the page. */
const KEEP = 200;

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 */
export function mount(ctx, root) {
  const list = h('div', { 'data-testid': 'channels' });
  const message = h('div');
  const name = /** @type {HTMLInputElement} */ (h('input', { type: 'text', name: 'channel', placeholder: 'public:news', required: true, value: ctx.param ?? '' }));
  const detail = h('div', { class: 'detail' });
  root.append(
    h(
      'form',
      {
        class: 'filters',
        'aria-label': 'Open a channel',
        onsubmit: (/** @type {Event} */ e) => {
          e.preventDefault();
          const channel = name.value.trim();
          if (channel) ctx.navigate(`/channels/${encodeURIComponent(channel)}`);
        },
      },
      field('Channel', name, 'Any channel name the channel rules let you subscribe to'),
      h('button', { type: 'submit' }, 'Open'),
    ),
    message,
    section('Channels with subscribers', list),
    detail,
  );

  const refresh = async () => {
    const headers = apiHeaders(ctx);
    if (!headers) {
      fill(list, h('p', { class: 'hint', text: 'Listing channels takes a token or an API key (HTTP API); with a password, open a channel by name.' }));
      return;
    }
    try {
      const res = await fetch('/api/channels', { headers, cache: 'no-store', signal: AbortSignal.timeout(10_000) });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
      if (!ctx.alive) return;
      message.replaceChildren();
      /** @type {Array<{channel: string, subscribers: number}>} */
      const rows = [...body.channels].sort((a, b) => a.channel.localeCompare(b.channel));
      keepFocus(list, () =>
        fill(
          list,
          table(
            [
              ['Channel', (c) => link(ctx, c.channel)],
              ['Subscribers', (c) => String(c.subscribers)],
            ],
            rows,
            { empty: 'No channel has subscribers right now.', key: (c) => c.channel },
          ),
        ),
      );
    } catch (e) {
      if (ctx.alive) message.replaceChildren(notice('error', `Could not list channels: ${describe(e)}`));
    }
  };
  ctx.onTick(() => void refresh());
  void refresh();
  if (ctx.param) detailView(ctx, detail, ctx.param);
}

/**
 * The credential as the HTTP API takes it (headers only, never the URL).
 * @param {import('../app.js').ViewContext} ctx
 * @returns {Record<string, string> | null}
 */
function apiHeaders(ctx) {
  const cred = ctx.app.credential;
  if (!cred) return null;
  if (cred.kind === 'token') return { authorization: `Bearer ${cred.secret}` };
  if (cred.kind === 'apiKey') return { 'x-api-key': cred.secret };
  return null;
}

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {string} channel
 */
function link(ctx, channel) {
  const href = `/channels/${encodeURIComponent(channel)}`;
  return h(
    'a',
    {
      href,
      'aria-current': ctx.param === channel ? 'true' : null,
      onclick: (/** @type {MouseEvent} */ e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
        e.preventDefault();
        ctx.navigate(href);
      },
    },
    h('code', { text: channel }),
  );
}

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 * @param {string} channel
 */
function detailView(ctx, root, channel) {
  const presence = h('div', { 'data-testid': 'presence' });
  const history = h('div');
  const live = h('div');
  const messages = h('ol', { class: 'events', 'aria-live': 'polite', 'data-testid': 'channel-messages' });
  const publish = h('div');
  root.append(
    section(`Channel ${channel}`, h('h3', { text: 'Presence' }), presence, h('h3', { text: 'Logged history' }), history),
    section('Live messages', live, messages),
    section('Publish a test message', publish),
  );

  /** @type {import('../../../clients/js/src/subscription.js').Subscription | null} */
  let sub = null;
  ctx.cleanup(() => void sub?.unsubscribe().catch(() => {}));

  const loadPresence = async () => {
    try {
      /** @type {any[]} */
      const members = [];
      /** @type {string | null} */
      let cursor = null;
      do {
        /** @type {any} */
        const page = await ctx.call('presence.get', cursor ? { channel, cursor, limit: 1000 } : { channel, limit: 1000 });
        members.push(...page.members);
        cursor = page.nextCursor;
      } while (cursor && members.length < 5000);
      if (!ctx.alive) return;
      fill(
        presence,
        table(
          [
            ['Identity', (m) => m.identity],
            ['Client', (m) => (m.client?.name ? String(m.client.name) : '—')],
            ['Connection', (m) => h('code', { class: 'id', text: m.connId }, m.connId === ctx.client.connId ? pill('you', 'info') : null)],
            ['Joined', (m) => timeEl(m.joinedAt)],
          ],
          members,
          { empty: 'Nobody is present (or this channel keeps no presence).' },
        ),
      );
    } catch (e) {
      if (ctx.alive) fill(presence, notice('error', `Presence unavailable: ${describe(e)}`));
    }
  };

  const loadHistory = async () => {
    try {
      const head = await ctx.call('history', { channel, limit: 1, since: 0 });
      // The newest 20: from the newest offset back.
      const all = await ctx.call('history', { channel, limit: 20, since: Math.max(0, head.latest - 20) });
      if (!ctx.alive) return;
      fill(
        history,
        all.events.length === 0
          ? h('p', { class: 'empty', text: `Nothing logged (newest offset ${all.latest}).` })
          : h('ol', { class: 'events' }, [...all.events].reverse().map((/** @type {any} */ m) => messageItem(m))),
        h('p', { class: 'hint', text: `The newest ${all.events.length} logged publications, newest first.` }),
      );
    } catch (e) {
      if (ctx.alive) fill(history, h('p', { class: 'hint', text: `No history: ${describe(e)}` }));
    }
  };

  const liveControls = () => {
    if (!sub) {
      fill(
        live,
        h('p', { class: 'hint', text: 'Watching subscribes this connection (it shows in the presence list) until you stop or leave this page.' }),
        h(
          'button',
          {
            type: 'button',
            onclick: async () => {
              try {
                sub = await ctx.client.subscribe(channel, {
                  recover: false,
                  onMessage: (m) => {
                    messages.prepend(messageItem(m));
                    while (messages.children.length > KEEP) messages.lastElementChild?.remove();
                  },
                });
                liveControls();
                void loadPresence();
              } catch (e) {
                fill(live, notice('error', `Could not subscribe: ${describe(e)}`));
              }
            },
          },
          'Watch live',
        ),
      );
      return;
    }
    fill(
      live,
      h('p', {}, pill('subscribed', 'ok'), ' Messages appear below, newest first.'),
      h(
        'button',
        {
          type: 'button',
          class: 'secondary',
          onclick: async () => {
            const s = sub;
            sub = null;
            await s?.unsubscribe().catch(() => {});
            liveControls();
            void loadPresence();
          },
        },
        'Stop watching',
      ),
    );
  };

  for (const event of ['presence.join', 'presence.leave']) {
    ctx.on(event, (p) => {
      if (p?.channel !== channel) return;
      messages.prepend(h('li', { class: 'event event-presence' }, `${p.identity} ${event === 'presence.join' ? 'joined' : 'left'} `, timeEl(p.timestamp)));
      void loadPresence();
    });
  }

  if (ctx.can(WRITE)) {
    const eventName = /** @type {HTMLInputElement} */ (h('input', { type: 'text', name: 'event', value: 'test', required: true }));
    const data = /** @type {HTMLTextAreaElement} */ (h('textarea', { name: 'data', rows: '4', spellcheck: 'false' }, '{"text": "hello from the control UI"}'));
    const result = h('div', { 'aria-live': 'polite' });
    fill(
      publish,
      h(
        'form',
        {
          class: 'inline-form',
          'aria-label': `Publish on ${channel}`,
          onsubmit: async (/** @type {Event} */ e) => {
            e.preventDefault();
            try {
              const payload = data.value.trim() ? parseJson(data.value, 'Data') : null;
              const r = await ctx.client.publish(channel, eventName.value.trim() || 'message', payload);
              result.replaceChildren(notice('ok', `Delivered to ${r.delivered} socket${r.delivered === 1 ? '' : 's'}${r.offset ? `, offset ${r.offset}` : ''}.`));
              if (r.offset) void loadHistory();
            } catch (err) {
              result.replaceChildren(notice('error', `Not published: ${describe(err)}`));
            }
          },
        },
        field('Event', eventName),
        field('Data (JSON)', data),
        h('button', { type: 'submit' }, 'Publish'),
        result,
      ),
    );
  } else {
    fill(publish, ctx.needs(WRITE, 'Publishing'));
  }

  liveControls();
  void loadPresence();
  void loadHistory();
}

/** @param {any} m a `notify` message */
function messageItem(m) {
  return h(
    'li',
    { class: 'event' },
    h(
      'div',
      { class: 'event-head' },
      m.offset ? h('span', { class: 'offset', text: `#${m.offset}` }) : null,
      h('strong', { text: m.event }),
      timeEl(m.timestamp),
    ),
    json(m.data),
  );
}
