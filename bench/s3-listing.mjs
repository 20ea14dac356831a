// Issue 6, acceptance 6: listing latency on an s3 store with 2,000 projects and an app with 200
// versions (seed 10.2 targets: projects under 500 ms, an app's versions under 1 s). The store
// lives in s3rver on 127.0.0.1; prints cold and warm latencies and S3 requests per listing,
// through the kk server (its listing cache on, and off) and straight from the store.
//   npm run build && node bench/s3-listing.mjs [--projects 2000] [--versions 200] [--runs 20]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store, createHasher, forEachLimit, push } from '@kk/core';
import { createS3Driver } from '@kk/drivers';
import { startS3rver } from '@kk/testkit';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const PROJECTS = arg('projects', 2000);
const VERSIONS = arg('versions', 200);
const RUNS = arg('runs', 20);
const ADMIN = 'bench-admin-token';

const s3 = await startS3rver();
const work = mkdtempSync(join(tmpdir(), 'kk-s3-listing-'));
const driver = createS3Driver(s3.driverOptions('bench'));
let requests = 0;
driver.client.middlewareStack.add((next) => (args) => (requests++, next(args)), { step: 'initialize' });
const hasher = createHasher({ threads: 1 });

try {
  // ---- populate: one real version, then refs to its manifest ----
  const t0 = performance.now();
  const store = await Store.open(driver, { create: true });
  const src = join(work, 'src');
  rmSync(src, { recursive: true, force: true });
  await import('node:fs/promises').then((fs) => fs.mkdir(src, { recursive: true }));
  writeFileSync(join(src, 'index.html'), '<h1>bench</h1>\n');
  const first = await push({ store, hasher, project: 'p0000', app: 'api', version: 'v0000', dir: src, statCache: false, stateDir: join(work, 'state') });
  const refs = [];
  for (let v = 1; v < VERSIONS; v++) refs.push(['p0000', 'api', `v${String(v).padStart(4, '0')}`]);
  for (let p = 0; p < PROJECTS; p++) refs.push([`p${String(p).padStart(4, '0')}`, 'web', '1.0.0']);
  const base = Date.parse('2024-01-01T00:00:00Z');
  let n = 0;
  await forEachLimit(refs, 32, async ([project, app, version]) => {
    await store.putRef(project, app, version, first.manifest, 'bench', new Date(base + 1000 * n++).toISOString());
  });
  const populateS = (performance.now() - t0) / 1000;
  console.error(`populated ${PROJECTS} projects and ${VERSIONS} versions of p0000/api in ${populateS.toFixed(1)} s (${requests} S3 requests)`);

  const { startServer } = await import('@kk/server');
  const results = { projects: PROJECTS, versions: VERSIONS, runs: RUNS, populate_s: +populateS.toFixed(1) };

  /** Cold (first) and warm (the rest) latency of `fn`, in ms, and S3 requests per call. */
  async function measure(fn) {
    const r0 = requests;
    let t = performance.now();
    await fn();
    const cold = performance.now() - t;
    const coldRequests = requests - r0;
    const warm = [];
    const r1 = requests;
    for (let i = 0; i < RUNS; i++) {
      t = performance.now();
      await fn();
      warm.push(performance.now() - t);
    }
    warm.sort((a, b) => a - b);
    const q = (p) => +warm[Math.min(warm.length - 1, Math.floor(p * warm.length))].toFixed(1);
    return { cold_ms: +cold.toFixed(1), warm_p50_ms: q(0.5), warm_p95_ms: q(0.95), warm_max_ms: q(1), s3_requests_cold: coldRequests, s3_requests_warm: (requests - r1) / RUNS };
  }

  for (const [label, cacheTtlMs] of [['server', undefined], ['server_no_cache', 0]]) {
    const config = cacheTtlMs === undefined ? {} : { cacheTtlMs };
    const srv = await startServer({ store, adminToken: ADMIN, listen: { host: '127.0.0.1', port: 0 }, log: false, config });
    const get = async (path, expectTotal) => {
      const res = await fetch(`${srv.url.replace(/\/$/, '')}${path}`, { headers: { authorization: `Bearer ${ADMIN}` } });
      if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status} ${await res.text()}`);
      const body = await res.json();
      if (expectTotal !== undefined && body.total !== undefined && body.total !== expectTotal) throw new Error(`GET ${path}: total ${body.total}, expected ${expectTotal}`);
    };
    results[label] = {
      list_projects: await measure(() => get('/api/v1/projects', PROJECTS)),
      list_versions: await measure(() => get('/api/v1/projects/p0000/apps/api/versions', VERSIONS)),
    };
    await srv.close();
  }

  results.store = {
    list_projects: await measure(async () => {
      if ((await store.listProjects()).length !== PROJECTS) throw new Error('wrong project count');
    }),
    list_versions: await measure(async () => {
      if ((await store.listVersions('p0000', 'api')).length !== VERSIONS) throw new Error('wrong version count');
    }),
  };
  console.log(JSON.stringify(results, null, 2));
} finally {
  await hasher.close();
  await driver.close();
  await s3.stop();
  rmSync(work, { recursive: true, force: true });
}
