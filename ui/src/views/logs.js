// Logs: the newest records of the instance holding this connection
// (`logs.tail`, a bounded ring in its memory), by lowest level; followed
// on every presence tick while "follow" is on.

import { field, fill, h, notice, time } from '../dom.js';
import { describe } from '../util.js';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 */
export function mount(ctx, root) {
  const level = /** @type {HTMLSelectElement} */ (h('select', { name: 'level' }, LEVELS.map((l) => h('option', { value: l, text: l, selected: l === 'info' }))));
  const limit = /** @type {HTMLSelectElement} */ (h('select', { name: 'limit' }, ['50', '100', '500', '1000'].map((n) => h('option', { value: n, text: n, selected: n === '100' }))));
  const follow = /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', id: 'logs-follow', checked: true }));
  const info = h('p', { class: 'hint', 'aria-live': 'polite' });
  const out = h('div', { class: 'logs', tabindex: '0', role: 'log', 'aria-label': 'Log records, newest last' });
  const message = h('div');
  level.addEventListener('change', () => void refresh());
  limit.addEventListener('change', () => void refresh());
  root.append(
    h(
      'form',
      { class: 'filters', 'aria-label': 'Log filters', onsubmit: (/** @type {Event} */ e) => (e.preventDefault(), void refresh()) },
      field('Lowest level', level),
      field('Records', limit),
      h('div', { class: 'field check' }, follow, h('label', { for: 'logs-follow', text: 'Follow (on every presence tick)' })),
      h('button', { type: 'submit', class: 'secondary' }, 'Refresh'),
    ),
    message,
    info,
    out,
  );

  const refresh = async () => {
    try {
      const r = await ctx.call('logs.tail', { level: level.value, limit: Number(limit.value) });
      if (!ctx.alive) return;
      message.replaceChildren();
      const atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      fill(
        out,
        r.records.length === 0
          ? h('p', { class: 'empty', text: 'No record at this level.' })
          : r.records.map((/** @type {any} */ rec) =>
              h(
                'div',
                { class: `log log-${String(rec.level).toLowerCase()}` },
                h('span', { class: 'log-ts', text: time(rec.ts) }),
                h('span', { class: 'log-level', text: String(rec.level).toUpperCase() }),
                h('span', { class: 'log-target', text: rec.target }),
                h('span', { class: 'log-msg', text: rec.message }),
              ),
            ),
      );
      if (atBottom) out.scrollTop = out.scrollHeight;
      info.textContent = `${r.records.length} records of instance ${r.nodeId} (the one holding this connection), newest last.`;
    } catch (e) {
      if (ctx.alive) message.replaceChildren(notice('error', `Could not read the log: ${describe(e)}`));
    }
  };
  ctx.onTick(() => {
    if (follow.checked) void refresh();
  });
  void refresh();
}
