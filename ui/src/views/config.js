// Config: the runtime settings in force (`config.get`), edited as a JSON
// merge patch (`config.patch`) or a whole override document
// (`config.apply`) against the version they were read at: a change made
// meanwhile is a conflict (-32007) shown with the version now in force.
// A newer version is noticed on every presence tick; `config.history`
// says who changed what.

import { fill, h, json, notice, pill, section, table, timeEl, uid } from '../dom.js';
import { ErrorCode, RpcError } from '../../../clients/js/src/index.js';
import { describe, parseJson } from '../util.js';

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 */
export function mount(ctx, root) {
  const banner = h('div', { 'aria-live': 'polite', 'data-testid': 'config-banner' });
  const current = h('div', { 'data-testid': 'config-current' });
  const editor = h('div');
  const history = h('div');
  root.append(banner, section('In force', current), section('Change', editor), section('History', history));

  /** @type {any} */
  let loaded = null;

  /**
   * Read what this instance has in force. After a conflict the version the
   * gateway named is awaited (an instance applies a new version within a
   * second): a bounded number of reads, 300 ms apart.
   * @param {number} [atLeast]
   */
  const load = async (atLeast = 0) => {
    try {
      let cfg = await ctx.call('config.get');
      for (let i = 0; i < 10 && cfg.version < atLeast && ctx.alive; i++) {
        await new Promise((resolve) => setTimeout(resolve, 300));
        cfg = await ctx.call('config.get');
      }
      if (!ctx.alive) return;
      loaded = cfg;
      banner.replaceChildren();
      fill(
        current,
        h('p', {}, 'Version ', h('strong', { 'data-testid': 'config-version', text: String(cfg.version) }), cfg.version === 0 ? ' (no runtime override: the file and environment values apply)' : ''),
        h('h3', { text: 'Overridden settings' }),
        cfg.overridden.length ? h('ul', { class: 'tags' }, cfg.overridden.map((/** @type {string} */ p) => h('li', { class: 'tag', text: p }))) : h('p', { class: 'empty', text: 'None.' }),
        h('details', {}, h('summary', { text: 'Effective live settings' }), json(cfg.config)),
        h('details', {}, h('summary', { text: 'Override document' }), json(cfg.overrides)),
      );
      renderEditor();
      void loadHistory();
    } catch (e) {
      if (ctx.alive) fill(current, notice('error', `Could not read the config: ${describe(e)}`));
    }
  };

  const area = /** @type {HTMLTextAreaElement} */ (h('textarea', { class: 'json-input', rows: '10', spellcheck: 'false', name: 'document' }, '{}'));
  const areaId = uid('cfg');
  area.id = areaId;
  const result = h('div', { 'aria-live': 'polite', 'data-testid': 'config-result' });
  let mode = 'patch';
  const label = h('label', { for: areaId });
  const base = h('span');

  const renderEditor = () => {
    base.textContent = String(loaded?.version ?? '?');
    label.textContent = mode === 'patch' ? 'JSON merge patch of the overrides (null removes one)' : 'The whole override document ({} removes every override)';
  };

  const radios = [
    ['patch', 'Merge a patch (config.patch)'],
    ['apply', 'Replace the overrides (config.apply)'],
  ].map(([value, text]) =>
    h(
      'label',
      { class: 'radio' },
      h('input', {
        type: 'radio',
        name: 'config-mode',
        value,
        checked: value === 'patch',
        onchange: () => {
          mode = value;
          if (mode === 'apply' && loaded) area.value = JSON.stringify(loaded.overrides ?? {}, null, 2);
          if (mode === 'patch' && area.value.trim() === JSON.stringify(loaded?.overrides ?? {}, null, 2)) area.value = '{}';
          renderEditor();
        },
      }),
      ` ${text}`,
    ),
  );

  fill(
    editor,
    h(
      'form',
      {
        'aria-label': 'Change the runtime config',
        onsubmit: async (/** @type {Event} */ e) => {
          e.preventDefault();
          if (!loaded) return;
          const baseVersion = loaded.version;
          try {
            const doc = parseJson(area.value, 'The document');
            const reply =
              mode === 'patch'
                ? await ctx.call('config.patch', { patch: doc, baseVersion })
                : await ctx.call('config.apply', { config: doc, baseVersion });
            result.replaceChildren(notice('ok', `Saved: version ${reply.version} is in force (was ${baseVersion}).`));
            if (mode === 'patch') area.value = '{}';
            await load(reply.version);
          } catch (err) {
            if (err instanceof RpcError && err.code === ErrorCode.CONFLICT) {
              const now = /** @type {any} */ (err.data)?.currentVersion;
              result.replaceChildren(
                notice(
                  'error',
                  h('strong', { text: 'Version conflict. ' }),
                  `The config changed since you read version ${baseVersion}${Number.isInteger(now) ? `: version ${now} is in force now` : ''}. Nothing was saved; your text is kept. `,
                  h('button', { type: 'button', class: 'secondary small', onclick: () => void load(Number.isInteger(now) ? now : 0) }, 'Load the current version'),
                  ' then check it and save again.',
                ),
              );
            } else {
              result.replaceChildren(notice('error', `Not saved: ${describe(err)}`));
            }
          }
        },
      },
      h('fieldset', { class: 'kinds' }, h('legend', { text: 'How' }), radios),
      h('div', { class: 'field' }, label, area),
      h('p', { class: 'hint' }, 'Saved only if the config is still at version ', base, ' (the one shown above).'),
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save'), h('button', { type: 'button', class: 'secondary', onclick: () => void load() }, 'Reload')),
      result,
    ),
  );

  const loadHistory = async () => {
    try {
      const r = await ctx.call('config.history', { limit: 20 });
      if (!ctx.alive) return;
      fill(
        history,
        table(
          [
            ['Version', (c) => `${c.fromVersion} → ${c.version}`],
            ['What', (c) => h('span', {}, pill(c.op, 'info'), c.path ? [' ', h('code', { text: c.path })] : null)],
            ['Value', (c) => json(c.value, 'json inline')],
            ['By', (c) => c.by],
            ['When', (c) => timeEl(c.at)],
          ],
          r.entries,
          { empty: 'No runtime change yet.' },
        ),
      );
    } catch (e) {
      if (ctx.alive) fill(history, notice('error', `Could not read the history: ${describe(e)}`));
    }
  };

  // A change made elsewhere shows as a banner; the editor keeps its base.
  ctx.onTick(async () => {
    if (!loaded) return;
    try {
      const cfg = await ctx.call('config.get');
      if (!ctx.alive || cfg.version === loaded.version) return;
      fill(
        banner,
        notice(
          'warn',
          `Version ${cfg.version} is in force now; this page shows version ${loaded.version}. `,
          h('button', { type: 'button', class: 'secondary small', onclick: () => void load(cfg.version) }, 'Load it'),
        ),
      );
    } catch {
      // the next tick tries again
    }
  });
  void load();
}
