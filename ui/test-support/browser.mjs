// What the browser tests share: a two-instance cluster on a redis-server of
// its own (the processes of clients/js/test-support, every wait bounded,
// everything killed at the end), headless Chromium driven by
// playwright-core, and the JavaScript client for the agents and clients
// the tests play.

import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { connect as connectClient } from '../../clients/js/src/index.js';

export { ADMIN, Gateway, NODE, Redis, WRITER, sleep, until, within } from '../../clients/js/test-support/gateway.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const UI_DIR = path.resolve(here, '..');
export const REPO = path.resolve(UI_DIR, '..');
export const DIST = path.join(UI_DIR, 'dist');

/** Where screenshots go: `SWITCHYARD_SCREENSHOTS`, else target/ui-screenshots. */
export const SCREENSHOTS = path.resolve(process.env.SWITCHYARD_SCREENSHOTS ?? path.join(REPO, 'target', 'ui-screenshots'));

/** Node 22+ has a global WebSocket; Node 20 without the flag gets `ws`. */
const WebSocketImpl = globalThis.WebSocket ?? (await import('ws')).WebSocket;

/**
 * The JavaScript client with the WebSocket this Node has.
 * @param {string} url
 * @param {any} [options]
 */
export function connect(url, options = {}) {
  return connectClient(url, { WebSocket: WebSocketImpl, ...options });
}

/** The browser: `CHROMIUM`, else Debian's /usr/bin/chromium. */
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install it (apt-get install chromium) or set CHROMIUM`);
  }
  const args = ['--disable-dev-shm-usage', '--disable-gpu'];
  // As root (containers, CI) Chromium refuses to start with its sandbox.
  if (typeof process.getuid === 'function' && process.getuid() === 0) args.push('--no-sandbox');
  return chromium.launch({ executablePath: CHROMIUM, args, timeout: 30_000 });
}

/**
 * A page that records what went wrong in it: uncaught errors, console
 * errors and CSP violations (the CSP forbids inline script and style).
 * @param {import('playwright-core').Browser} browser
 */
export async function newPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  /** @type {string[]} */
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  return { context, page, problems };
}

/**
 * Log in through the form.
 * @param {import('playwright-core').Page} page
 * @param {string} secret
 * @param {{remember?: boolean}} [options]
 */
export async function logIn(page, secret, options = {}) {
  await page.getByLabel('Your token').fill(secret);
  if (options.remember) await page.getByLabel('Remember for this tab').check();
  await page.getByRole('button', { name: 'Log in' }).click();
}

/**
 * A screenshot under SCREENSHOTS.
 * @param {import('playwright-core').Page} page
 * @param {string} name
 */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const file = path.join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/**
 * Go to a view by its nav link (as a person would) and wait for its heading.
 * @param {import('playwright-core').Page} page
 * @param {string} title
 */
export async function openView(page, title) {
  await page.getByRole('navigation', { name: 'Views' }).getByRole('link', { name: new RegExp(`^${title}`) }).click();
  await page.getByRole('heading', { level: 1, name: title }).waitFor();
}
