// The control UI in a real browser (headless Chromium) against a cluster
// of two gateway instances on a redis-server started here. The page is
// served by instance A from this checkout's ui/dist; agents and other
// clients, written with the JavaScript client, connect to instance B.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  ADMIN,
  DIST,
  Gateway,
  NODE,
  Redis,
  SCREENSHOTS,
  WRITER,
  connect,
  launchBrowser,
  logIn,
  newPage,
  openView,
  screenshot,
  sleep,
  until,
  within,
} from '../test-support/browser.mjs';

/** The tool the test agent offers, with a schema covering the form's kinds. */
const DEPLOY_SCHEMA = {
  type: 'object',
  required: ['env', 'replicas'],
  properties: {
    env: { type: 'string', enum: ['staging', 'production'], description: 'Where to deploy' },
    replicas: { type: 'integer', minimum: 1, maximum: 10, default: 2 },
    ratio: { type: 'number' },
    dryRun: { type: 'boolean', default: true },
    version: { type: 'string', pattern: '^v[0-9]+' },
    tags: { type: 'array', items: { type: 'string' } },
    limits: { type: 'object', properties: { cpu: { type: 'number' }, memory: { type: 'string' } } },
    extra: { oneOf: [{ type: 'string' }, { type: 'object' }] },
  },
};

describe('the control UI on a two-instance cluster', { timeout: 110_000 }, () => {
  /**
   * A test that, when it fails, leaves a screenshot of every open page
   * (`failed-<test>-<n>.png`) beside the others; its pages are closed after.
   * @param {string} name
   * @param {() => Promise<void>} fn
   */
  const uiTest = (name, fn) =>
    test(name, async () => {
      try {
        await fn();
      } catch (error) {
        const open = browser?.contexts().flatMap((c) => c.pages()) ?? [];
        const slug = name.replace(/[^a-zA-Z0-9]+/g, '-').slice(0, 40);
        await Promise.all(open.map((p, i) => screenshot(p, `failed-${slug}-${i}`).catch(() => {})));
        throw error;
      } finally {
        // Each test starts with no page open (their problems are kept).
        await Promise.all((browser?.contexts() ?? []).map((c) => within(c.close(), 5000, 'closing a page').catch(() => {})));
      }
    });

  /** @type {Redis} */
  let redis;
  /** @type {Gateway} */
  let a;
  /** @type {Gateway} */
  let b;
  /** @type {import('playwright-core').Browser} */
  let browser;
  /** @type {any[]} clients the tests opened */
  const clients = [];
  /** @type {any} the agent on instance B */
  let agent;
  /** @type {any[]} arguments the agent's `deploy` tool received */
  const deployed = [];

  const open = async (/** @type {Gateway} */ gateway, /** @type {any} */ options) => {
    const client = await connect(gateway.url, options);
    clients.push(client);
    return client;
  };

  /** A page on instance A, logged in as the admin. */
  const adminPage = async (path = '/') => {
    const p = await newPage(browser);
    pages.push(p);
    await p.page.goto(`http://127.0.0.1:${a.port}${path}`);
    await logIn(p.page, ADMIN);
    await p.page.getByTestId('identity').filter({ hasText: 'admin' }).waitFor();
    return p.page;
  };
  /** @type {Array<{context: import('playwright-core').BrowserContext, problems: string[]}>} */
  const pages = [];

  before(async () => {
    redis = await Redis.start();
    const env = {
      SWITCHYARD_UI__DIR: DIST,
      // The views refresh on the presence tick: every second here.
      SWITCHYARD_LIMITS__PRESENCE_TICK_MS: '1000',
    };
    [a, b, browser] = await Promise.all([
      Gateway.start({ id: 'a', redis, env }),
      Gateway.start({ id: 'b', redis, env }),
      launchBrowser(),
    ]);
    agent = await open(b, { token: NODE, role: 'node', client: { name: 'deployer', version: '1.0.0' } });
    agent.tool('deploy', async (/** @type {any} */ req) => {
      deployed.push(req.args);
      for (const step of ['checking', 'building', 'rolling out']) {
        req.progress({ step });
        await sleep(50);
      }
      return { deployed: true, env: req.args.env, by: req.caller?.identity };
    });
    await agent.register({
      agentId: 'deployer',
      capabilities: ['deploy'],
      models: ['tiny-1'],
      tools: [{ name: 'deploy', description: 'Deploy a build to an environment', parameters: DEPLOY_SCHEMA }],
    });
  });

  after(async () => {
    await within(browser?.close() ?? Promise.resolve(), 10_000, 'closing the browser').catch(() => {});
    await Promise.all(clients.map((c) => within(c.close(), 5000, 'closing a client').catch(() => {})));
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
    console.log(`screenshots: ${SCREENSHOTS}`);
  });

  uiTest('a wrong credential shows a clear message, and nothing is put in the address', async () => {
    const { page, problems: seen } = await newPage(browser);
    await page.goto(`http://127.0.0.1:${a.port}/`);
    await logIn(page, 'not-the-right-token-0123456789');
    const alert = page.getByRole('alert');
    await alert.filter({ hasText: 'Wrong credential' }).waitFor();
    assert.match(await alert.innerText(), /refused this token/);
    assert.equal(new URL(page.url()).search, '');
    assert.doesNotMatch(page.url(), /not-the-right-token/);
    await screenshot(page, '00-login-error');
    await page.context().close();
    assert.deepEqual(seen, []);
  });

  uiTest('logged in with a token, Cluster lists both instances', async () => {
    const page = await adminPage('/');
    // The login lands on the Cluster view (the address follows the view
    // once the session is set up: wait for it, bounded).
    await page.waitForURL((url) => url.pathname === '/cluster', { timeout: 5000 });
    assert.equal(new URL(page.url()).pathname, '/cluster');
    await page.getByRole('heading', { level: 1, name: 'Cluster' }).waitFor();
    await page.locator('[data-instance="a"]').waitFor();
    await page.locator('[data-instance="b"]').waitFor();
    assert.match(await page.locator('[data-instance="a"]').innerText(), /this page/);
    // The other instance's Redis state and config version come with its
    // heartbeat; its pub/sub lag once its first canary was measured.
    const other = page.locator('[data-instance="b"]');
    assert.match(await other.innerText(), /connected/);
    assert.match(await other.innerText(), /\d+ ms|—/);
    assert.match(await page.getByTestId('local-instance').innerText(), /Redis\s+connected/);
    await screenshot(page, '01-cluster');
  });

  uiTest('a scope the identity lacks is named', async () => {
    const { page, problems: seen } = await newPage(browser);
    await page.goto(`http://127.0.0.1:${a.port}/clients`);
    await logIn(page, WRITER);
    await page.getByRole('heading', { level: 1, name: 'Clients' }).waitFor();
    await page.getByText('Needs scope operator.admin').waitFor();
    await openView(page, 'Approvals');
    await page.getByText('Needs scope operator.approvals').waitFor();
    await screenshot(page, '02-needs-scope');
    await page.context().close();
    assert.deepEqual(seen, []);
  });

  uiTest('an approval asked by an agent on B appears live on A; approving it reaches the agent and the audit trail', async () => {
    const page = await adminPage('/approvals');
    await page.getByRole('heading', { level: 1, name: 'Approvals' }).waitFor();
    await page.getByText('Nothing is waiting for a decision.').waitFor();

    const decision = agent.requestApproval({
      tool: 'delete_file',
      args: { path: '/srv/data/old.log' },
      summary: 'delete /srv/data/old.log',
      timeoutMs: 60_000,
    });
    // No reload: the push brings it.
    const card = page.locator('article.approval').filter({ hasText: 'delete_file' });
    await card.waitFor();
    assert.match(await card.innerText(), /old\.log/);
    assert.match(await card.innerText(), /agent-1/);
    await page.getByRole('navigation', { name: 'Views' }).locator('[data-badge="approvals"]').filter({ hasText: '1' }).waitFor();
    await screenshot(page, '03-approvals-pending');

    await card.getByLabel('Note (kept in the audit trail)').fill('old logs may go');
    await card.getByRole('button', { name: 'Approve' }).click();

    const record = await within(decision, 10_000, 'the decision reaching the agent');
    assert.equal(record.status, 'approved');
    assert.equal(record.decidedBy, 'admin');
    assert.equal(record.note, 'old logs may go');

    await card.waitFor({ state: 'detached' });
    const row = page.getByTestId('approval-history').locator(`[data-approval="${record.approvalId}"]`);
    await row.waitFor();
    const text = await row.innerText();
    assert.match(text, /approved/);
    assert.match(text, /admin/);
    assert.match(text, /old logs may go/);
    const when = await row.locator('time').getAttribute('datetime');
    assert.equal(Date.parse(String(when)), record.resolvedAt);
    await screenshot(page, '04-approvals-decided');
  });

  uiTest('a client kicked from the Clients view disappears and is disconnected', async () => {
    const target = await open(b, { token: WRITER, client: { name: 'kick-target' } });
    const closed = new Promise((resolve) => target.on('close', resolve));
    const page = await adminPage('/clients');
    await page.getByLabel('Identity').fill('writer');
    const row = page.locator(`tr[data-conn="${target.connId}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /kick-target/);
    await screenshot(page, '05-clients');

    await row.getByRole('button', { name: 'Kick writer' }).click();
    await row.getByRole('button', { name: 'Confirm kick' }).click();
    await row.waitFor({ state: 'detached' });
    const event = /** @type {any} */ (await within(closed, 10_000, 'the kicked client to be closed'));
    assert.equal(event.code, 4003);
    // Later refreshes (one per presence tick) do not bring it back.
    const admin = await open(a, { token: ADMIN });
    await until(async () => !(await admin.call('clients.list')).clients.some((c) => c.connId === target.connId), 10_000, 'the kicked connection leaving the cluster list');
    await sleep(1500);
    assert.equal(await row.count(), 0);
  });

  uiTest("an agent's tool is invoked from a form generated from its schema, with progress", async () => {
    const page = await adminPage('/agents/deployer');
    const tool = page.locator('article[data-tool="deploy"]');
    await tool.waitFor();
    // Required fields are checked before anything is sent.
    await tool.getByLabel('replicas *').fill('');
    await tool.getByRole('button', { name: 'Invoke' }).click();
    await tool.getByRole('alert').filter({ hasText: 'replicas: required' }).waitFor();
    assert.equal(deployed.length, 0);

    await tool.getByLabel('env *').selectOption('production');
    await tool.getByLabel('replicas *').fill('3');
    await tool.getByLabel('ratio').fill('0.5');
    await tool.getByLabel('dryRun').uncheck();
    await tool.getByLabel('version').fill('v42');
    await tool.getByRole('button', { name: 'Add item' }).click();
    await tool.getByLabel('tags item 1').fill('blue');
    await tool.getByRole('button', { name: 'Add item' }).click();
    await tool.getByLabel('tags item 2').fill('canary');
    await tool.getByLabel('cpu').fill('1.5');
    await tool.getByLabel('extra (JSON)').fill('{"ticket": 7}');
    await tool.getByRole('button', { name: 'Invoke' }).click();

    const result = tool.getByTestId('invoke-result');
    await result.getByText('Answered by deployer').waitFor();
    assert.deepEqual(deployed.at(-1), {
      env: 'production',
      replicas: 3,
      ratio: 0.5,
      dryRun: false,
      version: 'v42',
      tags: ['blue', 'canary'],
      limits: { cpu: 1.5 },
      extra: { ticket: 7 },
    });
    assert.match(await result.innerText(), /"deployed": true/);
    assert.match(await result.innerText(), /"by": "admin"/);
    const progress = await tool.getByTestId('invoke-progress').locator('li').allInnerTexts();
    assert.equal(progress.length, 3);
    assert.match(progress.join('\n'), /checking[\s\S]*building[\s\S]*rolling out/);
    await screenshot(page, '06-agents-invoke');
  });

  uiTest('a config change made meanwhile is shown as a version conflict', async () => {
    const page = await adminPage('/config');
    const version = Number(await page.getByTestId('config-version').innerText());
    const admin = await open(b, { token: ADMIN });
    await admin.call('config.patch', { patch: { limits: { max_subscriptions: 64 } }, baseVersion: version });
    await page.getByLabel(/JSON merge patch/).fill('{"limits": {"max_batch": 50}}');
    await page.getByRole('button', { name: 'Save' }).click();
    const conflict = page.getByTestId('config-result').getByRole('alert');
    await conflict.filter({ hasText: 'Version conflict' }).waitFor();
    assert.match(await conflict.innerText(), new RegExp(`since you read version ${version}: version ${version + 1} is in force now`));
    await screenshot(page, '07-config-conflict');
    await conflict.getByRole('button', { name: 'Load the current version' }).click();
    await page.getByTestId('config-version').filter({ hasText: String(version + 1) }).waitFor();
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByTestId('config-result').getByText(`version ${version + 2} is in force`).waitFor();
    // Saved through A; B applies a new version when A's announcement
    // reaches it, a moment later (bounded wait).
    let limits;
    for (const deadline = Date.now() + 5000; ; ) {
      limits = (await admin.call('config.get')).config.limits;
      if (limits.max_batch === 50 || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(limits.max_batch, 50);
  });

  uiTest('a reload on a deep link keeps the view (SPA fallback) and the login for this tab', async () => {
    const res = await fetch(`http://127.0.0.1:${a.port}/approvals`, { headers: { accept: 'text/html' } });
    assert.equal(res.status, 200);
    assert.match(String(res.headers.get('content-type')), /text\/html/);
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    const script = /<script type="module" src="(\/assets\/app-[0-9a-f]+\.js)">/.exec(await res.text())?.[1];
    assert.ok(script);
    const asset = await fetch(`http://127.0.0.1:${a.port}${script}`);
    assert.equal(asset.status, 200);
    assert.match(String(asset.headers.get('content-type')), /javascript/);
    assert.match(String(asset.headers.get('cache-control')), /immutable/);
    await asset.arrayBuffer();

    const { page, problems: seen } = await newPage(browser);
    await page.goto(`http://127.0.0.1:${a.port}/approvals`);
    await logIn(page, ADMIN, { remember: true });
    await page.getByRole('heading', { level: 1, name: 'Approvals' }).waitFor();
    await page.reload();
    await page.getByRole('heading', { level: 1, name: 'Approvals' }).waitFor();
    assert.equal(new URL(page.url()).pathname, '/approvals');
    assert.equal(await page.getByRole('link', { name: /^Approvals/ }).getAttribute('aria-current'), 'page');
    // A deeper one: an agent's page.
    await page.goto(`http://127.0.0.1:${a.port}/agents/deployer`);
    await page.locator('article[data-tool="deploy"]').waitFor();
    // Logging out forgets the credential: a reload asks again.
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('button', { name: 'Log in' }).waitFor();
    await page.reload();
    await page.getByRole('button', { name: 'Log in' }).waitFor();
    await page.context().close();
    assert.deepEqual(seen, []);
  });

  uiTest('the views work from the keyboard', async () => {
    const { page, problems: seen } = await newPage(browser);
    await page.goto(`http://127.0.0.1:${a.port}/cluster`);
    await page.getByRole('button', { name: 'Log in' }).waitFor();
    await page.keyboard.type(ADMIN); // the credential field has the focus
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { level: 1, name: 'Cluster' }).waitFor();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');
    // Tab along to the Approvals link and follow it with Enter.
    for (let i = 0; i < 30; i++) {
      await page.keyboard.press('Tab');
      const text = await page.evaluate(() => document.activeElement?.textContent ?? '');
      if (text.startsWith('Approvals')) break;
    }
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { level: 1, name: 'Approvals' }).waitFor();
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'main');
    await page.context().close();
    assert.deepEqual(seen, []);
  });

  uiTest('every view renders (screenshots)', async () => {
    // Something to show: a session with events, a channel with a member,
    // a device waiting to pair.
    const writer = await open(b, { token: WRITER, client: { name: 'planner' } });
    const session = await writer.createSession({ sessionId: `plan-${Date.now()}`, meta: { title: 'release plan' } });
    await session.send('step', { n: 1, text: 'draft' });
    await session.send('step', { n: 2, text: 'review' });
    await writer.subscribe('public:news');

    const page = await adminPage('/cluster');
    await screenshot(page, '10-cluster');
    await openView(page, 'Clients');
    await page.getByTestId('clients').locator('tr[data-conn]').first().waitFor();
    await screenshot(page, '11-clients');

    await openView(page, 'Sessions');
    await page.getByRole('link', { name: session.id }).click();
    await page.getByTestId('session-history').getByText('review').waitFor();
    await page.getByRole('button', { name: 'Watch live' }).click();
    await page.getByText('watching', { exact: true }).waitFor();
    await session.send('step', { n: 3, text: 'ship' });
    await page.getByTestId('session-live').getByText('ship').waitFor();
    await screenshot(page, '12-sessions');

    await openView(page, 'Channels');
    await page.getByRole('link', { name: 'public:news' }).click();
    await page.getByTestId('presence').getByText('planner').waitFor();
    await page.getByRole('button', { name: 'Watch live' }).click();
    await page.getByText('subscribed', { exact: true }).waitFor();
    await page.getByRole('button', { name: 'Publish' }).click();
    await page.getByTestId('channel-messages').getByText('hello from the control UI').waitFor();
    await screenshot(page, '13-channels');

    await openView(page, 'Agents');
    await page.locator('tr[data-agent="deployer"]').waitFor();
    await screenshot(page, '14-agents');

    await openView(page, 'Approvals');
    await screenshot(page, '15-approvals');

    // Unauthenticated connections are closed after the handshake timeout
    // (10 s): the device asks just before the operator looks.
    const device = await open(b, { reconnect: false, client: { name: 'kiosk' } });
    const paired = new Promise((resolve) => device.on('device.paired', resolve));
    await device.call('device.pair.request', { deviceId: 'kiosk-1', name: 'Lobby kiosk', platform: 'linux' });
    await openView(page, 'Devices');
    const pending = page.getByTestId('device-pending').locator('article[data-device="kiosk-1"]');
    await pending.waitFor();
    await screenshot(page, '16-devices');
    await pending.getByRole('button', { name: 'Approve' }).click();
    const token = /** @type {any} */ (await within(paired, 10_000, 'the device receiving its token'));
    assert.equal(token.deviceId, 'kiosk-1');
    await page.getByTestId('devices').locator('tr[data-device="kiosk-1"]').getByText('paired').waitFor();

    await openView(page, 'Config');
    await page.getByTestId('config-version').waitFor();
    await screenshot(page, '17-config');

    await openView(page, 'Logs');
    await page.getByRole('log').waitFor();
    await screenshot(page, '18-logs');
  });

  test('no page met an error or a CSP violation', () => {
    const seen = pages.flatMap((p) => p.problems);
    assert.deepEqual(seen, []);
  });
});
