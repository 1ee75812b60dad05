// The committed ui/dist is what the sources build to, and `build.mjs`
// notices (--check) and repairs (a build) a dist that is not.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { DIST, REPO, UI_DIR } from '../test-support/browser.mjs';

/**
 * Run a build script, bounded.
 * @param {string} script
 * @param {string[]} args
 */
function run(script, args = []) {
  const r = spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('ui/dist', () => {
  test('matches the sources (node ui/build.mjs --check)', () => {
    const r = run(path.join(UI_DIR, 'build.mjs'), ['--check']);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /ui\/dist matches the sources/);
  });

  test('index.html references its hashed assets, which exist and stay small', () => {
    const html = readFileSync(path.join(DIST, 'index.html'), 'utf8');
    const js = /<script type="module" src="\/assets\/(app-[0-9a-f]{10}\.js)"><\/script>/.exec(html)?.[1];
    const css = /<link rel="stylesheet" href="\/assets\/(app-[0-9a-f]{10}\.css)">/.exec(html)?.[1];
    assert.ok(js && css, html);
    assert.deepEqual(readdirSync(path.join(DIST, 'assets')).sort(), [css, js].sort());
    // Nothing inline: the CSP allows neither inline script nor style.
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)/);
    assert.doesNotMatch(html, /<style|style=/);
    const gz = gzipSync(readFileSync(path.join(DIST, 'assets', js)), { level: 9 }).length;
    assert.ok(gz < 60 * 1024, `the script is ${gz} bytes gzipped`);
  });

  describe('a copy of the sources', () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'switchyard-ui-'));
    after(() => rmSync(tmp, { recursive: true, force: true }));
    const ui = path.join(tmp, 'ui');
    mkdirSync(ui);
    cpSync(path.join(UI_DIR, 'build.mjs'), path.join(ui, 'build.mjs'));
    cpSync(path.join(UI_DIR, 'src'), path.join(ui, 'src'), { recursive: true });
    cpSync(DIST, path.join(ui, 'dist'), { recursive: true });
    symlinkSync(path.join(UI_DIR, 'node_modules'), path.join(ui, 'node_modules'), 'dir');
    symlinkSync(path.join(REPO, 'clients'), path.join(tmp, 'clients'), 'dir');
    const build = path.join(ui, 'build.mjs');

    test('--check fails on a stale file and on a changed source; a build repairs both', () => {
      assert.equal(run(build, ['--check']).status, 0);

      writeFileSync(path.join(ui, 'dist', 'assets', 'app-0000000000.js'), 'old');
      let r = run(build, ['--check']);
      assert.equal(r.status, 1);
      assert.match(r.out, /stale assets\/app-0000000000\.js/);

      writeFileSync(path.join(ui, 'src', 'styles.css'), `${readFileSync(path.join(ui, 'src', 'styles.css'), 'utf8')}\n.extra { color: red; }\n`);
      r = run(build, ['--check']);
      assert.equal(r.status, 1);
      assert.match(r.out, /missing assets\/app-[0-9a-f]{10}\.css/);
      assert.match(r.out, /differs index\.html/);

      r = run(build);
      assert.equal(r.status, 0, r.out);
      assert.equal(run(build, ['--check']).status, 0);
      const files = readdirSync(path.join(ui, 'dist', 'assets'));
      assert.equal(files.length, 2, files.join(' '));
      assert.ok(!files.includes('app-0000000000.js'));
    });
  });
});
