// Audit queries on the control database (issue 11, acceptance 5): 100,000 audit rows in SQLite
// (or --db postgres://...), then filtered pages as `GET /api/v1/audit` asks for them (limit 50,
// with the total), timed over 30 runs each. No thresholds: the figures go to bench/README.md.
//
//   npm run build && node bench/audit-query.mjs [--rows 100000] [--db sqlite:///tmp/x.db]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = resolve(import.meta.dirname, '..');
const { Control, auditRow } = await import(pathToFileURL(join(ROOT, 'packages/control/dist/index.js')).href).then(async (m) => ({
  ...m,
  auditRow: (await import(pathToFileURL(join(ROOT, 'packages/control/dist/audit.js')).href)).auditRow,
}));

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, '')] = argv[i + 1];
const ROWS = Number(opt.rows ?? 100_000);
const work = await mkdtemp(join(tmpdir(), 'kk-audit-bench-'));
const url = opt.db ?? `sqlite://${join(work, 'kk.db')}`;
const control = await Control.open(url);

// 20 projects x 10 apps, 50 tokens, 400 agents, actions mostly pulls, spread over 30 days.
const ACTIONS = ['pull', 'pull', 'pull', 'pull', 'push', 'promote', 'rollback', 'delete', 'token.create'];
const now = Date.now();
const span = 30 * 86_400_000;
let t0 = performance.now();
const BATCH = 2_000;
for (let i = 0; i < ROWS; i += BATCH) {
  const rows = [];
  for (let j = i; j < Math.min(ROWS, i + BATCH); j++) {
    const ms = now - span + Math.floor((j / ROWS) * span);
    rows.push(
      auditRow({
        id: `${String(ms).padStart(13, '0')}-${String(j % 1_000_000).padStart(6, '0')}-${(j * 2654435761 >>> 0).toString(16).padStart(8, '0')}`,
        time: new Date(ms).toISOString(),
        action: ACTIONS[j % ACTIONS.length],
        project: `p${j % 20}`,
        app: `a${(j >> 3) % 10}`,
        version: `v${j % 500}`,
        manifest: `sha256:${'0'.repeat(64)}`,
        token: `t${String(j % 50).padStart(19, '0')}`,
        agent: `host-${j % 400}/0123456789abcdef`,
        address: '10.0.0.1',
        details: { files: j % 100 },
      }),
    );
  }
  await control.cdb.writeTx((tx) => tx.insertInto('audit').values(rows).execute());
}
const loadS = (performance.now() - t0) / 1000;

const iso = (msAgo) => new Date(now - msAgo).toISOString();
const cases = [
  ['project + since 1h (the kk audit --project P --since 1h page)', { project: 'p7', since: iso(3_600_000) }],
  ['project + since 7d', { project: 'p7', since: iso(7 * 86_400_000) }],
  ['project + app', { project: 'p3', app: 'a5' }],
  ['action push', { action: 'push' }],
  ['token + action', { token: `t${String(13).padStart(19, '0')}`, action: 'pull' }],
  ['agent', { agent: 'host-42/0123456789abcdef' }],
  ['version', { version: 'v123' }],
  ['since/until window of 1 day', { since: iso(10 * 86_400_000), until: iso(9 * 86_400_000) }],
  ['no filter (newest page)', {}],
  ['scoped admin (project visible)', { visible: { project: 'p1', apps: ['a1', 'a2'] } }],
];
const out = [];
for (const [name, filter] of cases) {
  const times = [];
  let r;
  for (let i = 0; i < 30; i++) {
    t0 = performance.now();
    r = await control.audit.query(filter, { limit: 50, offset: 0, order: 'desc' });
    times.push(performance.now() - t0);
  }
  // And the next page by cursor (no total).
  const ct = [];
  for (let i = 0; i < 30 && r.next_cursor !== null; i++) {
    t0 = performance.now();
    await control.audit.query(filter, { limit: 50, offset: 0, order: 'desc', cursor: r.next_cursor });
    ct.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  ct.sort((a, b) => a - b);
  const med = (xs) => (xs.length ? xs[Math.floor(xs.length / 2)] : NaN);
  const p95 = (xs) => (xs.length ? xs[Math.floor(xs.length * 0.95)] : NaN);
  out.push({ name, items: r.items.length, total: r.total, median_ms: med(times), p95_ms: p95(times), cursor_median_ms: med(ct) });
}
await control.close();
await rm(work, { recursive: true, force: true });

console.log(`audit queries on ${control.dialect}: ${ROWS.toLocaleString('en')} rows (loaded in ${loadS.toFixed(1)} s); page of 50 with total, 30 runs each`);
console.log('| filter | items | total | median ms | p95 ms | next page by cursor, median ms |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
for (const o of out) console.log(`| ${o.name} | ${o.items} | ${o.total} | ${o.median_ms.toFixed(2)} | ${o.p95_ms.toFixed(2)} | ${Number.isNaN(o.cursor_median_ms) ? '-' : o.cursor_median_ms.toFixed(2)} |`);
