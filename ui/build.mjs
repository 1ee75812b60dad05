// Build the control UI into ui/dist: src/main.js (with the JavaScript
// client it imports) and src/styles.css, bundled and minified by esbuild
// into assets/app-<hash>.js and assets/app-<hash>.css (the hash of their
// contents, so the gateway may cache them for good), and an index.html
// that references them. Stale hashed files are removed.
//
//   node ui/build.mjs           build
//   node ui/build.mjs --check   exit 1 when building would change ui/dist
//
// The output is deterministic: the same sources and esbuild version give
// the same bytes, which is what --check relies on.

import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, 'dist');
const assets = path.join(dist, 'assets');

/** @param {Uint8Array | string} data */
const hash = (data) => createHash('sha256').update(data).digest('hex').slice(0, 10);

/**
 * Bundle one entry point; its single output file's bytes.
 * @param {string} entry
 * @param {esbuild.BuildOptions} options
 */
async function bundle(entry, options) {
  const result = await esbuild.build({
    entryPoints: [path.join(here, 'src', entry)],
    bundle: true,
    minify: true,
    write: false,
    outdir: 'out',
    charset: 'utf8',
    legalComments: 'none',
    logLevel: 'warning',
    ...options,
  });
  if (result.outputFiles.length !== 1) throw new Error(`${entry}: expected one output file, got ${result.outputFiles.length}`);
  return result.outputFiles[0].contents;
}

/** What ui/dist must contain: relative path → bytes. */
async function expected() {
  const js = await bundle('main.js', { format: 'esm', target: ['es2022', 'chrome100', 'firefox100', 'safari15'], platform: 'browser' });
  const css = await bundle('styles.css', { loader: { '.css': 'css' }, target: ['chrome100', 'firefox100', 'safari15'] });
  const jsName = `app-${hash(js)}.js`;
  const cssName = `app-${hash(css)}.css`;
  const html = [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<meta name="color-scheme" content="light dark">',
    '<title>Switchyard</title>',
    '<link rel="icon" href="data:,">',
    `<link rel="stylesheet" href="/assets/${cssName}">`,
    `<script type="module" src="/assets/${jsName}"></script>`,
    '</head>',
    '<body>',
    '<noscript>The Switchyard control UI needs JavaScript.</noscript>',
    '<div id="app"></div>',
    '</body>',
    '</html>',
    '',
  ].join('\n');
  return new Map([
    ['index.html', new TextEncoder().encode(html)],
    [`assets/${jsName}`, js],
    [`assets/${cssName}`, css],
  ]);
}

/** Every file under ui/dist now: relative path → bytes. */
async function present() {
  const files = new Map();
  for (const dir of ['', 'assets']) {
    let entries = [];
    try {
      entries = await readdir(path.join(dist, dir), { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      if (!e.isFile()) continue;
      const rel = dir ? `${dir}/${e.name}` : e.name;
      files.set(rel, await readFile(path.join(dist, rel)));
    }
  }
  return files;
}

/** @param {Uint8Array} a @param {Uint8Array} b */
const same = (a, b) => a.length === b.length && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

/** @param {Map<string, Uint8Array>} files */
function sizes(files) {
  for (const [name, data] of files) {
    if (!name.startsWith('assets/')) continue;
    const gz = gzipSync(data, { level: 9 }).length;
    console.log(`  ${name}  ${(data.length / 1024).toFixed(1)} KiB raw, ${(gz / 1024).toFixed(1)} KiB gzip`);
  }
}

const want = await expected();
if (process.argv.includes('--check')) {
  const have = await present();
  const problems = [];
  for (const [name, data] of want) {
    const got = have.get(name);
    if (!got) problems.push(`missing ${name}`);
    else if (!same(got, data)) problems.push(`differs ${name}`);
  }
  for (const name of have.keys()) if (!want.has(name)) problems.push(`stale ${name}`);
  if (problems.length) {
    console.error(`ui/dist does not match the sources; run \`node ui/build.mjs\` and commit ui/dist:\n  ${problems.join('\n  ')}`);
    process.exit(1);
  }
  console.log('ui/dist matches the sources');
  sizes(want);
} else {
  await mkdir(assets, { recursive: true });
  const have = await present();
  for (const name of have.keys()) if (!want.has(name)) await rm(path.join(dist, name));
  for (const [name, data] of want) {
    const old = have.get(name);
    if (!old || !same(old, data)) await writeFile(path.join(dist, name), data);
  }
  console.log('built ui/dist:');
  sizes(want);
}
