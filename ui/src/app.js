// The application: the connection to the gateway, logging in and out, the
// navigation between views (History API routes: /cluster, /approvals…)
// and the state several views share (pending approvals and pairings).

import { ErrorCode, RpcError, connect } from '../../clients/js/src/index.js';
import { fill, h, notice } from './dom.js';
import { loginForm } from './login.js';
import { ADMIN, APPROVALS, PAIRING, READ, describe } from './util.js';
import * as agents from './views/agents.js';
import * as approvals from './views/approvals.js';
import * as channels from './views/channels.js';
import * as clients from './views/clients.js';
import * as cluster from './views/cluster.js';
import * as config from './views/config.js';
import * as devices from './views/devices.js';
import * as logs from './views/logs.js';
import * as sessions from './views/sessions.js';

/** Where a credential is kept when "remember for this tab" is ticked. */
const STORAGE_KEY = 'switchyard.credential';

/**
 * A view: `mount(ctx, root)` renders into `root` and may return a cleanup.
 * @typedef {{name: string, title: string, scope: string | null, mount: (ctx: ViewContext, root: HTMLElement) => void | (() => void)}} View
 */

/** @type {View[]} */
export const VIEWS = [
  { name: 'cluster', title: 'Cluster', scope: READ, mount: cluster.mount },
  { name: 'clients', title: 'Clients', scope: ADMIN, mount: clients.mount },
  { name: 'sessions', title: 'Sessions', scope: READ, mount: sessions.mount },
  { name: 'channels', title: 'Channels', scope: null, mount: channels.mount },
  { name: 'agents', title: 'Agents', scope: READ, mount: agents.mount },
  { name: 'approvals', title: 'Approvals', scope: APPROVALS, mount: approvals.mount },
  { name: 'devices', title: 'Devices', scope: PAIRING, mount: devices.mount },
  { name: 'config', title: 'Config', scope: ADMIN, mount: config.mount },
  { name: 'logs', title: 'Logs', scope: ADMIN, mount: logs.mount },
];

/**
 * What a mounted view gets: the connection and listeners that are
 * removed when the view goes away.
 */
export class ViewContext {
  /** @type {Array<() => void>} */
  #cleanups = [];
  #alive = true;

  /**
   * @param {App} app
   * @param {string | undefined} param the route's second segment (decoded)
   */
  constructor(app, param) {
    this.app = app;
    this.param = param;
    this.client = /** @type {import('../../clients/js/src/client.js').Client} */ (app.client);
  }

  get alive() {
    return this.#alive;
  }

  get sub() {
    return this.app.sub;
  }

  /** @param {string} scope */
  can(scope) {
    return this.app.can(scope);
  }

  /**
   * A call on the connection.
   * @param {string} method
   * @param {unknown} [params]
   * @param {{timeout?: number, signal?: AbortSignal}} [options]
   */
  call(method, params, options) {
    return this.client.call(method, params, options);
  }

  /**
   * A push listener, removed with the view.
   * @param {string} event
   * @param {(params: any) => void} listener
   */
  on(event, listener) {
    const off = this.client.on(event, (p) => {
      if (this.#alive) listener(p);
    });
    this.#cleanups.push(off);
    return off;
  }

  /**
   * Run `fn` on every `presence.tick` (every `limits.presence_tick_ms`,
   * 5 s by default): the views' refresh rhythm where no push exists.
   * @param {() => void} fn
   */
  onTick(fn) {
    return this.on('presence.tick', fn);
  }

  /** @param {() => void} fn */
  cleanup(fn) {
    this.#cleanups.push(fn);
  }

  /** @param {string} path */
  navigate(path) {
    this.app.navigate(path);
  }

  /** A notice that the identity lacks `scope` (what this part needs). */
  needs(scope, what = 'This') {
    return this.app.needsScope(scope, what);
  }

  dispose() {
    this.#alive = false;
    for (const fn of this.#cleanups.splice(0)) {
      try {
        fn();
      } catch {
        // a listener already gone
      }
    }
  }
}

/** Pending records kept live from pushes, shared by the nav and a view. */
export class Pending {
  /** @type {Map<string, any>} */
  items = new Map();
  /** @type {Set<() => void>} */
  #listeners = new Set();

  /** @param {() => void} fn */
  subscribe(fn) {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  changed() {
    for (const fn of this.#listeners) fn();
  }

  /**
   * @param {string} id
   * @param {any} record
   */
  put(id, record) {
    this.items.set(id, record);
    this.changed();
  }

  /** @param {string} id */
  remove(id) {
    if (this.items.delete(id)) this.changed();
  }

  /**
   * @param {any[]} records
   * @param {(r: any) => string} key
   */
  replace(records, key) {
    this.items = new Map(records.map((r) => [key(r), r]));
    this.changed();
  }
}

export class App {
  /** @type {import('../../clients/js/src/client.js').Client | null} */
  client = null;
  /** @type {any} */
  hello = null;
  /** The identity's `sub`. */
  sub = '';
  /** @type {string[]} */
  scopes = [];
  /** @type {{kind: string, secret: string} | null} kept in memory while logged in */
  credential = null;
  approvals = new Pending();
  devices = new Pending();
  /** @type {ViewContext | null} */
  #view = null;
  /** @type {Array<() => void>} */
  #sessionCleanups = [];
  /** @type {HTMLElement} */
  #root;
  /** @type {HTMLElement | null} */
  #main = null;
  /** @type {HTMLElement | null} */
  #status = null;
  /** @type {HTMLElement | null} */
  #nav = null;
  #loggingOut = false;

  /** @param {HTMLElement} root */
  constructor(root) {
    this.#root = root;
    window.addEventListener('popstate', () => this.render());
  }

  /** The gateway's WebSocket: the instance that served this page. */
  get url() {
    return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  }

  async start() {
    const saved = readSaved();
    if (saved) {
      this.#root.replaceChildren(h('p', { class: 'loading', role: 'status', text: 'Connecting…' }));
      const failed = await this.#connect(saved.kind, saved.secret, true);
      if (failed) {
        // A refused credential is not tried again on the next reload
        // (failures count towards a lock-out); an unreachable gateway is.
        if (failed.refused) sessionStorage.removeItem(STORAGE_KEY);
        this.showLogin(`The saved credential did not work: ${failed.message}`);
      }
      return;
    }
    this.showLogin();
  }

  /** @param {string} [message] why the login form is shown */
  showLogin(message) {
    this.#main = null;
    this.#nav = null;
    this.#status = null;
    document.title = 'Log in · Switchyard';
    fill(
      this.#root,
      loginForm({
        message,
        submit: (kind, secret, remember) => this.login(kind, secret, remember),
      }),
    );
  }

  /**
   * Connect and authenticate in-band (never in the URL).
   * @param {string} kind `token`, `apiKey` or `password`
   * @param {string} secret
   * @param {boolean} remember keep it in sessionStorage (this tab only)
   * @returns {Promise<string | null>} why it failed, or null
   */
  async login(kind, secret, remember) {
    return (await this.#connect(kind, secret, remember))?.message ?? null;
  }

  /**
   * @param {string} kind
   * @param {string} secret
   * @param {boolean} remember
   * @returns {Promise<{message: string, refused: boolean} | null>}
   */
  async #connect(kind, secret, remember) {
    /** @type {import('../../clients/js/src/client.js').Client} */
    let client;
    try {
      client = await connect(this.url, {
        [kind]: secret,
        client: { name: 'switchyard-ui', platform: 'browser' },
        reconnect: { initialDelayMs: 250, maxDelayMs: 10_000 },
      });
    } catch (error) {
      return loginError(error, kind);
    }
    if (client.hello?.role !== 'operator') {
      await client.close();
      return { message: 'This is an agent credential (role node). The control UI needs an operator credential.', refused: true };
    }
    let who;
    try {
      // `connect` does not name the identity; `auth` with the same
      // credential answers its `sub` (and changes nothing else).
      who = await client.call('auth', { [kind]: secret });
    } catch (error) {
      await client.close();
      return loginError(error, kind);
    }
    if (remember) sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ kind, secret }));
    else sessionStorage.removeItem(STORAGE_KEY);
    this.client = client;
    this.credential = { kind, secret };
    this.hello = client.hello;
    this.sub = who.sub;
    this.scopes = who.scopes ?? client.hello?.scopes ?? [];
    this.#loggingOut = false;
    this.#watch(client);
    this.#layout();
    await this.#loadShared();
    this.render();
    return null;
  }

  async logout() {
    this.#loggingOut = true;
    sessionStorage.removeItem(STORAGE_KEY);
    const client = this.client;
    this.#teardown();
    await client?.close();
    this.showLogin('Logged out.');
  }

  #teardown() {
    this.#view?.dispose();
    this.#view = null;
    for (const fn of this.#sessionCleanups.splice(0)) fn();
    this.client = null;
    this.hello = null;
    this.credential = null;
    this.sub = '';
    this.scopes = [];
    this.approvals.replace([], () => '');
    this.devices.replace([], () => '');
  }

  /** @param {string} scope */
  can(scope) {
    return this.scopes.includes(scope) || this.scopes.includes(ADMIN);
  }

  /**
   * @param {string} scope
   * @param {string} what
   */
  needsScope(scope, what = 'This view') {
    const held = this.scopes.length ? this.scopes.join(', ') : 'no scope';
    return notice(
      'info',
      h('strong', { text: `Needs scope ${scope}. ` }),
      `${what} needs ${scope} (or operator.admin); ${this.sub} has ${held}.`,
    );
  }

  /**
   * Connection state in the header; what a drop or a reconnect changes.
   * @param {import('../../clients/js/src/client.js').Client} client
   */
  #watch(client) {
    const offs = [
      client.on('close', (e) => {
        if (this.client !== client || this.#loggingOut) return;
        if (e.willReconnect) this.#setStatus('warn', `Connection lost (${e.code}); reconnecting…`);
        else {
          const why = e.error ? describe(e.error) : `closed (${e.code}${e.reason ? `: ${e.reason}` : ''})`;
          sessionStorage.removeItem(STORAGE_KEY);
          this.#teardown();
          this.showLogin(`Disconnected by the gateway: ${why}. Log in again.`);
        }
      }),
      client.on('reconnecting', (e) => {
        if (this.client === client) this.#setStatus('warn', `Reconnecting (attempt ${e.attempt})…`);
      }),
      client.on('open', (e) => {
        if (this.client !== client) return;
        this.hello = e.hello;
        this.#setStatus('ok', `Connected to instance ${e.nodeId}`);
        if (e.reconnected) {
          void this.#loadShared();
          this.render();
        }
      }),
      client.on('approval.requested', (r) => {
        if (r?.status === 'pending') this.approvals.put(r.approvalId, r);
      }),
      client.on('approval.resolved', (r) => this.approvals.remove(r?.approvalId)),
      client.on('device.pair.requested', (d) => {
        if (d?.status === 'pending') this.devices.put(d.deviceId, d);
      }),
      client.on('device.pair.resolved', (d) => this.devices.remove(d?.deviceId)),
      this.approvals.subscribe(() => this.#badges()),
      this.devices.subscribe(() => this.#badges()),
    ];
    this.#sessionCleanups.push(...offs.map((off) => () => void off()));
  }

  /** What the nav's counters show: pending approvals and pairings. */
  async #loadShared() {
    const client = this.client;
    if (!client) return;
    const jobs = [];
    if (this.can(APPROVALS)) {
      jobs.push(
        client.call('approval.list').then(
          (r) => this.approvals.replace(r.approvals, (a) => a.approvalId),
          () => {},
        ),
      );
    }
    if (this.can(PAIRING)) {
      jobs.push(
        client.call('device.list', { status: 'pending' }).then(
          (r) => this.devices.replace(r.devices, (d) => d.deviceId),
          () => {},
        ),
      );
    }
    await Promise.all(jobs);
  }

  #layout() {
    this.#status = h('span', { class: 'conn conn-ok', role: 'status', text: `Connected to instance ${this.client?.nodeId}` });
    this.#main = h('main', { id: 'main', tabindex: '-1' });
    this.#nav = h(
      'nav',
      { 'aria-label': 'Views' },
      h(
        'ul',
        {},
        VIEWS.map((v) =>
          h(
            'li',
            {},
            h(
              'a',
              {
                href: `/${v.name}`,
                'data-view': v.name,
                class: v.scope && !this.can(v.scope) ? 'locked' : null,
                title: v.scope && !this.can(v.scope) ? `needs scope ${v.scope}` : null,
                onclick: (/** @type {MouseEvent} */ e) => {
                  if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
                  e.preventDefault();
                  this.navigate(`/${v.name}`);
                },
              },
              v.title,
              h('span', { class: 'badge', 'data-badge': v.name, hidden: true }),
            ),
          ),
        ),
      ),
    );
    fill(
      this.#root,
      h('a', { class: 'skip', href: '#main', text: 'Skip to content' }),
      h(
        'header',
        { class: 'top' },
        h('a', { class: 'brand', href: '/cluster', onclick: (/** @type {Event} */ e) => (e.preventDefault(), this.navigate('/cluster')) }, 'Switchyard'),
        this.#status,
        h(
          'span',
          { class: 'who' },
          h('span', { class: 'who-sub', 'data-testid': 'identity', text: this.sub }),
          h('span', { class: 'who-scopes', text: this.scopes.join(' ') || 'no scopes' }),
        ),
        h('button', { type: 'button', class: 'secondary', onclick: () => void this.logout() }, 'Log out'),
      ),
      h('div', { class: 'layout' }, this.#nav, this.#main),
    );
    this.#badges();
  }

  #badges() {
    if (!this.#nav) return;
    for (const [name, store] of /** @type {const} */ ([
      ['approvals', this.approvals],
      ['devices', this.devices],
    ])) {
      const badge = /** @type {HTMLElement | null} */ (this.#nav.querySelector(`[data-badge="${name}"]`));
      if (!badge) continue;
      const n = store.items.size;
      badge.hidden = n === 0;
      badge.textContent = String(n);
      badge.setAttribute('aria-label', `${n} pending`);
    }
  }

  /**
   * @param {'ok' | 'warn'} kind
   * @param {string} text
   */
  #setStatus(kind, text) {
    if (!this.#status) return;
    this.#status.className = `conn conn-${kind}`;
    this.#status.textContent = text;
  }

  /** @param {string} path */
  navigate(path) {
    if (path !== location.pathname) history.pushState(null, '', path);
    this.render();
    this.#main?.focus();
  }

  /** Mount the view the address names. */
  render() {
    if (!this.client || !this.#main) {
      return;
    }
    const [name = '', ...rest] = location.pathname.split('/').filter(Boolean);
    if (name === '') {
      history.replaceState(null, '', '/cluster');
      return this.render();
    }
    const param = rest.length ? safeDecode(rest.join('/')) : undefined;
    const view = VIEWS.find((v) => v.name === name);
    this.#view?.dispose();
    this.#view = null;
    for (const link of this.#nav?.querySelectorAll('a[data-view]') ?? []) {
      if (link.getAttribute('data-view') === name) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    const main = this.#main;
    if (!view) {
      document.title = 'Not found · Switchyard';
      fill(main, h('h1', { text: 'Not found' }), h('p', {}, 'No view at ', h('code', { text: location.pathname }), '.'));
      return;
    }
    document.title = `${view.title} · Switchyard`;
    const root = h('div', { class: `view view-${view.name}` });
    fill(main, h('h1', { text: view.title }), root);
    if (view.scope && !this.can(view.scope)) {
      root.append(this.needsScope(view.scope, `The ${view.title} view`));
      return;
    }
    const ctx = new ViewContext(this, param);
    this.#view = ctx;
    try {
      const cleanup = view.mount(ctx, root);
      if (typeof cleanup === 'function') ctx.cleanup(cleanup);
    } catch (error) {
      root.append(notice('error', `This view failed: ${describe(error)}`));
    }
  }
}

/**
 * Words for a failed login, and whether the credential itself was refused.
 * @param {unknown} error
 * @param {string} kind
 * @returns {{message: string, refused: boolean}}
 */
function loginError(error, kind) {
  const what = kind === 'apiKey' ? 'API key' : kind;
  if (error instanceof RpcError && error.code === ErrorCode.UNAUTHORIZED) {
    return { message: `Wrong credential: the gateway refused this ${what} (it is unknown, expired or revoked).`, refused: true };
  }
  if (error instanceof RpcError && error.code === ErrorCode.RATE_LIMITED) {
    const ms = /** @type {any} */ (error.data)?.retryAfterMs;
    return { message: `Too many failed attempts from this address${Number.isInteger(ms) ? `: try again in ${Math.ceil(ms / 1000)} s` : ''}.`, refused: false };
  }
  if (error instanceof RpcError && error.code === ErrorCode.FORBIDDEN) {
    return { message: `This ${what} may not act as an operator: ${describe(error)}`, refused: true };
  }
  return { message: `Could not connect to the gateway: ${describe(error)}`, refused: false };
}

/** @returns {{kind: string, secret: string} | null} */
function readSaved() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? 'null');
    if (saved && typeof saved.kind === 'string' && typeof saved.secret === 'string') return saved;
  } catch {
    // unreadable: ignore
  }
  return null;
}

/** @param {string} s */
function safeDecode(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
