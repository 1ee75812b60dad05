// Agents: the registry (`agents.list`, `agents.stats`), the tools and
// models on offer (`tools.list`, `models.list`), refreshed on every
// presence tick; one agent's capabilities, load and tools, and a tool
// invoked through a form generated from its JSON Schema (`node.invoke`
// with its `invoke.progress`).

import { fill, h, json, keepFocus, notice, pill, section, table, timeEl } from '../dom.js';
import { schemaForm } from '../schema-form.js';
import { WRITE, describe } from '../util.js';

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 */
export function mount(ctx, root) {
  const stats = h('div', { class: 'cards' });
  const list = h('div', { 'data-testid': 'agents' });
  const tools = h('div');
  const models = h('div');
  const message = h('div');
  const detail = h('div', { class: 'detail' });
  root.append(message, stats, section('Registry', list), detail, section('Tools on offer', tools), section('Models on offer', models));

  /** @type {any[]} */
  let agents = [];
  /** @type {((agents: any[]) => void) | null} */
  let onAgents = null;

  const refresh = async () => {
    try {
      const [a, s, t, m] = await Promise.all([ctx.call('agents.list'), ctx.call('agents.stats'), ctx.call('tools.list'), ctx.call('models.list')]);
      if (!ctx.alive) return;
      message.replaceChildren();
      agents = a.agents;
      fill(
        stats,
        card('Online', s.online),
        card('Offline (defined)', s.offline),
        card('Definitions', s.defined),
        card('Tools', t.count),
        card('Models', m.count),
      );
      const rows = [...a.agents, ...a.defined.map((/** @type {any} */ d) => ({ ...d, online: false, definedOnly: true }))];
      keepFocus(list, () =>
        fill(
          list,
          table(
            [
              ['Agent', (r) => link(ctx, r.agentId)],
              ['State', (r) => (r.online ? pill(r.status ?? 'online', 'ok') : pill(r.definedOnly ? 'defined, not connected' : 'offline', 'muted'))],
              ['Type', (r) => r.type ?? '—'],
              ['Load', (r) => (r.online ? loadBar(r.load, r.maxConcurrency) : '—')],
              ['Capabilities', (r) => tags(r.capabilities)],
              ['Tools', (r) => (Array.isArray(r.tools) ? String(r.tools.length) : '—')],
              ['Instance', (r) => (r.instanceId ? h('code', { text: r.instanceId }) : '—')],
            ],
            rows,
            { empty: 'No agent registered or defined.', key: (r) => r.agentId, rowAttrs: (r) => ({ 'data-agent': r.agentId }) },
          ),
        ),
      );
      fill(
        tools,
        table(
          [
            ['Tool', (t) => h('code', { text: t.name })],
            ['Description', (t) => t.description || '—'],
            ['Agents', (t) => h('span', {}, t.agents.map((/** @type {string} */ id, /** @type {number} */ i) => [i ? ', ' : '', link(ctx, id)]))],
          ],
          t.tools,
          { empty: 'No online agent offers a tool.' },
        ),
      );
      fill(
        models,
        table(
          [
            ['Model', (m) => h('code', { text: m.id })],
            ['Agents', (m) => m.agents.join(', ')],
          ],
          m.models,
          { empty: 'No online agent serves a model.' },
        ),
      );
      onAgents?.(agents);
    } catch (e) {
      if (ctx.alive) message.replaceChildren(notice('error', `Could not read the registry: ${describe(e)}`));
    }
  };

  if (ctx.param) onAgents = agentDetail(ctx, detail, ctx.param);
  ctx.onTick(() => void refresh());
  void refresh();
}

/**
 * One agent: facts that follow the registry, and its tools' invoke forms
 * (built once, so typing is not lost to a refresh).
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 * @param {string} agentId
 * @returns {(agents: any[]) => void} called with each refreshed registry
 */
function agentDetail(ctx, root, agentId) {
  const facts = h('div');
  const toolsBox = h('div', { class: 'tools' });
  root.append(section(`Agent ${agentId}`, facts, h('h3', { text: 'Tools' }), toolsBox));
  /** Tool name → its schema as rendered. @type {Map<string, string>} */
  const rendered = new Map();
  let first = true;

  const load = async () => {
    try {
      const entry = await ctx.call('agents.get', { agentId });
      if (ctx.alive) update(entry);
    } catch (e) {
      if (ctx.alive) fill(facts, notice('error', `Could not read agent ${agentId}: ${describe(e)}`));
    }
  };

  /** @param {any} entry */
  const update = (entry) => {
    fill(
      facts,
      h(
        'dl',
        { class: 'facts' },
        h('dt', { text: 'Name' }),
        h('dd', { text: entry.name ?? entry.agentId }),
        h('dt', { text: 'State' }),
        h('dd', {}, entry.online ? pill(entry.status, 'ok') : pill('offline', 'muted')),
        h('dt', { text: 'Load' }),
        h('dd', {}, entry.online ? loadBar(entry.load, entry.maxConcurrency) : '—'),
        h('dt', { text: 'Capabilities' }),
        h('dd', {}, tags(entry.capabilities)),
        h('dt', { text: 'Models' }),
        h('dd', {}, tags(entry.models)),
        h('dt', { text: 'Methods' }),
        h('dd', {}, tags(entry.methods)),
        h('dt', { text: 'Identity' }),
        h('dd', { text: entry.identity ?? '—' }),
        h('dt', { text: 'Instance' }),
        h('dd', {}, entry.instanceId ? h('code', { text: entry.instanceId }) : '—', entry.connId ? [' · ', h('code', { class: 'id', text: entry.connId })] : null),
        h('dt', { text: 'Registered' }),
        h('dd', {}, timeEl(entry.registeredAt)),
        entry.definition ? [h('dt', { text: 'Definition' }), h('dd', {}, `version ${entry.definition.version}`, entry.definition.approvalRequired?.length ? `; approval required for ${entry.definition.approvalRequired.join(', ')}` : '')] : null,
      ),
    );
    /** @type {any[]} */
    const toolList = Array.isArray(entry.tools) ? entry.tools : [];
    const names = new Set(toolList.map((t) => t.name));
    for (const name of rendered.keys()) {
      if (!names.has(name)) {
        toolsBox.querySelector(`[data-tool="${CSS.escape(name)}"]`)?.remove();
        rendered.delete(name);
      }
    }
    for (const tool of toolList) {
      const schemaText = JSON.stringify(tool.parameters ?? null);
      if (rendered.get(tool.name) === schemaText) continue;
      const card = toolCard(ctx, agentId, tool);
      const old = toolsBox.querySelector(`[data-tool="${CSS.escape(tool.name)}"]`);
      if (old) old.replaceWith(card);
      else toolsBox.append(card);
      rendered.set(tool.name, schemaText);
    }
    if (toolList.length === 0) fill(toolsBox, h('p', { class: 'empty', text: 'This agent offers no tool.' }));
    else toolsBox.querySelector('.empty')?.remove();
    if (first && location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
    first = false;
  };

  void load();
  return (agents) => {
    const entry = agents.find((a) => a.agentId === agentId);
    if (entry) update(entry);
  };
}

/**
 * A tool's description, its generated form and what an invocation did.
 * @param {import('../app.js').ViewContext} ctx
 * @param {string} agentId
 * @param {any} tool
 */
function toolCard(ctx, agentId, tool) {
  const form = schemaForm(tool.parameters);
  const progress = h('ol', { class: 'progress-log', 'aria-live': 'polite', 'data-testid': 'invoke-progress' });
  const outcome = h('div', { 'aria-live': 'polite', 'data-testid': 'invoke-result' });
  const timeout = /** @type {HTMLInputElement} */ (h('input', { type: 'number', min: '1', max: '3600', step: '1', value: '60', class: 'narrow' }));
  const timeoutId = `${agentId}-${tool.name}-timeout`.replace(/[^a-zA-Z0-9_-]/g, '_');
  timeout.id = timeoutId;
  const submit = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit' }, 'Invoke'));
  /** @type {AbortController | null} */
  let running = null;
  const cancel = /** @type {HTMLButtonElement} */ (
    h('button', { type: 'button', class: 'secondary', hidden: true, onclick: () => running?.abort(new Error('cancelled from the control UI')) }, 'Cancel')
  );
  const can = ctx.can(WRITE);
  const body = can
    ? h(
        'form',
        {
          'aria-label': `Invoke ${tool.name}`,
          novalidate: true,
          onsubmit: async (/** @type {Event} */ e) => {
            e.preventDefault();
            const args = form.read();
            if (args.errors.length) return;
            running = new AbortController();
            submit.disabled = true;
            cancel.hidden = false;
            progress.replaceChildren();
            fill(outcome, h('p', { class: 'muted', text: 'Running…' }));
            const started = performance.now();
            try {
              const reply = await ctx.client.invoke(
                { nodeId: agentId, command: tool.name, params: args.value, timeoutMs: Math.max(1, Number(timeout.value) || 60) * 1000 },
                {
                  signal: running.signal,
                  onProgress: (data) =>
                    progress.append(
                      h('li', {}, h('span', { class: 'muted', text: `${Math.round(performance.now() - started)} ms ` }), h('code', { text: compact(data) })),
                    ),
                },
              );
              fill(outcome, notice('ok', `Answered by ${reply.nodeId} in ${Math.round(performance.now() - started)} ms.`), json(reply.result));
            } catch (err) {
              fill(outcome, notice('error', `Failed: ${describe(err)}`));
            } finally {
              running = null;
              submit.disabled = false;
              cancel.hidden = true;
            }
          },
        },
        form.element,
        h('div', { class: 'field inline' }, h('label', { for: timeoutId, text: 'Timeout (s)' }), timeout),
        h('div', { class: 'actions' }, submit, cancel),
        h('h4', { text: 'Progress' }),
        progress,
        h('h4', { text: 'Result' }),
        outcome,
      )
    : ctx.needs(WRITE, 'Invoking a tool');
  const id = `tool-${tool.name}`.replace(/[^a-zA-Z0-9_-]/g, '_');
  return h(
    'article',
    { class: 'tool', 'data-tool': tool.name, id },
    h('h4', { class: 'tool-name' }, h('code', { text: tool.name })),
    tool.description ? h('p', { text: tool.description }) : null,
    h('details', {}, h('summary', { text: 'Parameters schema' }), json(tool.parameters ?? null)),
    body,
  );
}

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {string} agentId
 */
function link(ctx, agentId) {
  const href = `/agents/${encodeURIComponent(agentId)}`;
  return h(
    'a',
    {
      href,
      'aria-current': ctx.param === agentId ? 'true' : null,
      onclick: (/** @type {MouseEvent} */ e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
        e.preventDefault();
        ctx.navigate(href);
      },
    },
    agentId,
  );
}

/** @param {unknown} list */
function tags(list) {
  if (!Array.isArray(list) || list.length === 0) return '—';
  return h('span', { class: 'tags' }, list.map((t) => h('span', { class: 'tag', text: String(t) })));
}

/**
 * @param {number} load
 * @param {number} max
 */
function loadBar(load, max) {
  const meter = h('meter', { min: '0', max: String(max || 1), value: String(load), 'aria-label': `load ${load} of ${max}` });
  return h('span', { class: 'load' }, meter, ` ${load}/${max}`);
}

/**
 * @param {string} label
 * @param {number} value
 */
function card(label, value) {
  return h('div', { class: 'card' }, h('div', { class: 'card-label', text: label }), h('div', { class: 'card-value', text: String(value) }));
}

/** One line of JSON, cut when long. @param {unknown} value */
function compact(value) {
  let text;
  try {
    text = JSON.stringify(value) ?? 'null';
  } catch {
    text = String(value);
  }
  return text.length > 500 ? `${text.slice(0, 500)}…` : text;
}
