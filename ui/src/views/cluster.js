// Cluster: the live instances (`status`), refreshed on every
// `presence.tick`; this instance's backend, pub/sub lag and config version
// from its `/metrics` (and `config.get` for admins).

import { duration, fill, h, notice, pill, section, table, timeEl } from '../dom.js';
import { ADMIN, describe, localMetrics } from '../util.js';

/**
 * @param {import('../app.js').ViewContext} ctx
 * @param {HTMLElement} root
 */
export function mount(ctx, root) {
  const summary = h('div', { class: 'cards', 'data-testid': 'cluster-summary' });
  const instances = h('div', { 'data-testid': 'instances' });
  const local = h('div', { 'data-testid': 'local-instance' });
  const error = h('div');
  const updated = h('p', { class: 'hint', 'aria-live': 'polite' });
  root.append(
    error,
    summary,
    section('Instances', instances, updated),
    section('This instance', h('p', { class: 'hint', text: 'The instance serving this page and holding this connection.' }), local),
  );

  let busy = false;
  const refresh = async () => {
    if (busy) return;
    busy = true;
    try {
      const [status, metrics, cfg] = await Promise.all([
        ctx.call('status'),
        localMetrics(),
        ctx.can(ADMIN) ? ctx.call('config.get').catch(() => null) : Promise.resolve(null),
      ]);
      if (!ctx.alive) return;
      error.replaceChildren();
      render(status, metrics, cfg);
    } catch (e) {
      if (ctx.alive) error.replaceChildren(notice('error', `Cluster status unavailable: ${describe(e)}`));
    } finally {
      busy = false;
    }
  };

  /**
   * @param {any} status
   * @param {Map<string, number> | null} metrics
   * @param {any} cfg
   */
  const render = (status, metrics, cfg) => {
    const now = Date.now();
    const c = status.cluster;
    fill(
      summary,
      card('Instances', c.instances.length),
      card('Connections', c.connections),
      card('Channels', c.channels),
      card('Sessions', c.sessions),
      card('Backend', status.backend.kind === 'redis' ? 'Redis' : 'memory (standalone)'),
    );
    const rows = [...c.instances].sort((a, b) => String(a.id).localeCompare(String(b.id)));
    fill(
      instances,
      table(
        [
          ['Instance', (i) => h('span', {}, h('code', { text: i.id }), i.id === status.nodeId ? pill('this page', 'info') : null)],
          ['Version', (i) => i.version],
          ['Generation', (i) => h('span', { title: `started ${new Date(i.generation).toISOString()}`, text: String(i.generation) })],
          ['Uptime', (i) => duration(now - i.startedAt)],
          ['Connections', (i) => String(i.connections)],
          ['Redis', (i) => (status.backend.kind !== 'redis' ? '—' : i.backendUp === false ? pill('unreachable', 'bad') : pill('connected', 'ok'))],
          ['Pub/sub lag', (i) => (typeof i.pubsubLagMs === 'number' ? `${i.pubsubLagMs} ms` : '—')],
          ['Config version', (i) => String(i.configVersion ?? 0)],
          ['Last heartbeat', (i) => h('span', {}, `${duration(Math.max(0, now - i.lastSeen))} ago`)],
          ['Started', (i) => timeEl(i.startedAt)],
        ],
        rows,
        { empty: 'No live instance reported.', rowAttrs: (i) => ({ 'data-instance': i.id }) },
      ),
    );
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed on every presence tick.`;

    const backendUp = metrics?.get('switchyard_backend_up');
    const lag = metrics?.get('switchyard_pubsub_lag_seconds');
    const configVersion = cfg?.version ?? metrics?.get('switchyard_config_version');
    const redisState = !status.backend.available
      ? pill('unreachable', 'bad')
      : status.backend.kind === 'redis'
        ? pill('connected', 'ok')
        : pill('in memory (no Redis)', 'muted');
    fill(
      local,
      h(
        'dl',
        { class: 'facts' },
        fact('Instance', h('code', { text: status.nodeId })),
        fact('Version', status.version),
        fact('Uptime', duration(status.uptimeMs)),
        fact('State', status.draining ? pill('draining', 'warn') : status.ready ? pill('ready', 'ok') : pill('not ready', 'bad')),
        fact('Connections here', String(status.local.connections)),
        fact('Redis', redisState, backendUp === 0 ? ' (backend_up = 0)' : ''),
        fact(
          'Pub/sub lag',
          lag === undefined
            ? status.backend.kind === 'redis'
              ? h('span', { class: 'muted', text: metrics ? 'no message measured yet' : 'metrics not served on this port' })
              : h('span', { class: 'muted', text: 'none (no Redis)' })
            : `${Math.round(lag * 1000)} ms`,
        ),
        fact(
          'Config version',
          configVersion === undefined ? h('span', { class: 'muted', text: 'unknown (needs operator.admin or /metrics)' }) : String(configVersion),
        ),
      ),
      h('p', { class: 'hint', text: 'Every instance reports its Redis state, pub/sub lag and config version with its heartbeat (the table above).' }),
    );
  };

  /** Keep the counters moving between refreshes. */
  ctx.on('presence.tick', (tick) => {
    void refresh();
    const connections = summary.querySelector('[data-card="Connections"] .card-value');
    if (connections && Number.isInteger(tick?.connections)) connections.textContent = String(tick.connections);
  });
  void refresh();
}

/**
 * @param {string} label
 * @param {string | number} value
 */
function card(label, value) {
  return h('div', { class: 'card', 'data-card': label }, h('div', { class: 'card-label', text: label }), h('div', { class: 'card-value', text: String(value) }));
}

/**
 * @param {string} term
 * @param {...any} value
 */
function fact(term, ...value) {
  return [h('dt', { text: term }), h('dd', {}, ...value)];
}
