#!/usr/bin/env node
// The web UI's projects page with many projects (issue 17, acceptance 3): the time from
// navigation to the first screen of the virtual list rendered in headless Chromium, against a
// real kk server over a file store of N projects (default 20,000), plus the JS bundle's gzip
// size. Printed, not asserted. Needs `npm run build` (it builds packages/web) and Chromium at
// /usr/bin/chromium (or KK_CHROMIUM).
//
//   node bench/web-projects.mjs [--projects 20000] [--runs 5]
//
// Data under bench/.data/web-projects-N (gitignored), written once through @kk/core: one app
// and one version per project, with the first-seen index objects the server keeps.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';
import { MANIFEST_FORMAT, Store, chunkingFor, forEachLimit, sha256Digest } from '../packages/core/dist/index.js';
import { openDriver } from '../packages/drivers/dist/index.js';
import { startServer } from '../packages/server/dist/index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const N = arg('projects', 20_000);
const RUNS = arg('runs', 5);
const ADMIN = 'admin-bench-web-projects-0123456789';
const dataDir = join(ROOT, 'bench', '.data', `web-projects-${N}`);
const storeDir = join(dataDir, 'store');

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function writeData() {
  if (existsSync(join(dataDir, 'complete'))) return 0;
  const t0 = performance.now();
  const store = await Store.open(await openDriver(storeDir), { create: true });
  const bytes = Buffer.from('<h1>kk</h1>\n');
  const chunk = sha256Digest(bytes);
  await store.putChunkObject(chunk, Buffer.concat([Buffer.from([0]), bytes]));
  const base = Date.parse('2026-03-01T08:00:00.000Z');
  await forEachLimit([...Array(N).keys()], 32, async (i) => {
    const project = `p-${String(i).padStart(5, '0')}`;
    const created = new Date(base + i * 1000).toISOString();
    const m = { format: MANIFEST_FORMAT, project, app: 'web', version: 'v1', created, builder: 'bench', git_commit: '', meta: {}, chunking: store.config.chunking ?? chunkingFor(), dirs: [], files: [{ path: 'index.html', size: bytes.length, mode: 0o644, mtime: base, sha256: chunk }] };
    const digest = await store.putManifest(m);
    await store.putRef(project, 'web', 'v1', digest, 'bench', created);
    const seen = Buffer.from(JSON.stringify({ created }));
    await store.writer.putIfAbsent(`server/index/projects/${project}`, seen);
    await store.writer.putIfAbsent(`server/index/apps/${project}/web`, seen);
  });
  await store.flush();
  await store.driver.close();
  await writeFile(join(dataDir, 'complete'), `${N}\n`);
  return performance.now() - t0;
}

function bundleGzip() {
  const dir = join(ROOT, 'packages', 'web', 'dist', 'assets');
  let js = 0;
  let css = 0;
  for (const f of readdirSync(dir)) {
    const gz = gzipSync(readFileSync(join(dir, f)), { level: 9 }).length;
    if (f.endsWith('.js')) js += gz;
    else if (f.endsWith('.css')) css += gz;
  }
  return { js, css };
}

await mkdir(dataDir, { recursive: true });
const wrote = await writeData();
if (wrote) console.log(`wrote ${N} projects in ${(wrote / 1000).toFixed(1)} s`);
const srv = await startServer({ store: storeDir, listen: '127.0.0.1:0', adminToken: ADMIN, log: false, config: { hasherThreads: 1 } });
const browser = await chromium.launch({ executablePath: process.env.KK_CHROMIUM || '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-gpu'] });
try {
  const h = { authorization: `Bearer ${ADMIN}` };
  let t = performance.now();
  const first = await (await fetch(`${srv.url}/projects?limit=200&order=asc`, { headers: h })).json();
  const coldMs = performance.now() - t;
  t = performance.now();
  await (await fetch(`${srv.url}/projects?limit=200&order=asc`, { headers: h })).json();
  const warmMs = performance.now() - t;
  console.log(`server: ${first.total} projects; GET /projects?limit=200 cold ${coldMs.toFixed(0)} ms (this server's first listing: the project-times snapshot, or every project's first-seen index object if there is none), warm ${warmMs.toFixed(0)} ms`);

  const firstScreen = [];
  const search = [];
  const requests = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    // Signed in as the sign-in form leaves it: the token in this tab's sessionStorage.
    await ctx.addInitScript((token) => sessionStorage.setItem('kk.token', token), ADMIN);
    const page = await ctx.newPage();
    await page.goto(`${srv.url}/ui/#/projects`);
    await page.waitForFunction(() => performance.getEntriesByName('kk:projects-rendered').length > 0, null, { timeout: 30_000 });
    const rows = await page.locator('.vlist [role=listitem]').count();
    const ms = await page.evaluate(() => performance.getEntriesByName('kk:projects-rendered')[0].startTime);
    // How much of it the server's answer took (resource timing of the page's requests).
    const req = await page.evaluate(() => {
      const r = performance.getEntriesByType('resource');
      const of = (part) => r.find((e) => e.name.includes(part));
      return { whoami: of('/api/v1/whoami')?.duration ?? 0, projects: of('/projects?')?.duration ?? 0, js: of('/assets/')?.duration ?? 0 };
    });
    firstScreen.push(ms);
    requests.push(req.projects);
    // A server-side search from the loaded page: typing to the filtered first screen.
    const before = await page.evaluate(() => performance.getEntriesByName('kk:projects-rendered').length);
    const t0 = await page.evaluate(() => performance.now());
    await page.getByLabel('Search projects').fill('p-1234');
    await page.waitForFunction((n) => performance.getEntriesByName('kk:projects-rendered').length > n, before, { timeout: 30_000 });
    const t1 = await page.evaluate(() => performance.getEntriesByName('kk:projects-rendered').at(-1).startTime);
    search.push(t1 - t0);
    console.log(`run ${i + 1}: first screen ${ms.toFixed(0)} ms after navigation start (${rows} rows in the DOM of ${first.total}; GET /projects ${req.projects.toFixed(0)} ms, whoami ${req.whoami.toFixed(0)} ms, bundle ${req.js.toFixed(0)} ms); search "p-1234" ${(t1 - t0).toFixed(0)} ms incl. the 200 ms typing debounce`);
    await ctx.close();
  }
  const { js, css } = bundleGzip();
  console.log(`first screen: median ${median(firstScreen).toFixed(0)} ms, min ${Math.min(...firstScreen).toFixed(0)}, max ${Math.max(...firstScreen).toFixed(0)} (target < 500 ms)`);
  console.log(`of which GET /projects (first page): median ${median(requests).toFixed(0)} ms`);
  console.log(`search: median ${median(search).toFixed(0)} ms`);
  console.log(`bundle: ${(js / 1024).toFixed(1)} KiB JS + ${(css / 1024).toFixed(1)} KiB CSS gzip -9 (limit 100 KB JS)`);
} finally {
  await browser.close();
  await srv.close();
}
