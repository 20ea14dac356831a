// Load on the control database (issue 11, acceptance 3): N concurrent clients (default 200) push
// and pull through one kk server for D seconds (default 60) while a webhook subscribed to push
// and pull receives every event on 127.0.0.1. The server runs in its own process over a file
// store with its default control database (SQLite at <store>/server/kk.db), so its peak RSS
// (VmHWM) is its own. Afterwards the database is read directly: every push/pull event must have
// exactly one delivery row, every delivery must be delivered, and the receiver must have got each
// delivery id exactly once.
//
//   npm run build && node bench/control-load.mjs [--clients 200] [--seconds 60] [--file-kib 16]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = resolve(import.meta.dirname, '..');
const imp = (p) => import(pathToFileURL(join(ROOT, p)).href);
const core = await imp('packages/core/dist/index.js');
const { createHttpDriver } = await imp('packages/drivers/dist/http.js');
const { Control } = await imp('packages/control/dist/index.js');

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, '')] = Number(argv[i + 1]);
const CLIENTS = opt.clients ?? 200;
const SECONDS = opt.seconds ?? 60;
const FILE_KIB = opt['file-kib'] ?? 16;
const DRAIN_S = 300;

const work = await mkdtemp(join(tmpdir(), 'kk-control-load-'));
const storeDir = join(work, 'store');
const ADMIN = randomBytes(24).toString('hex');

// ---- the webhook receiver ----
const seen = new Map(); // delivery id -> times received
let received = 0;
const rx = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const id = String(req.headers['x-kk-delivery-id']);
    seen.set(id, (seen.get(id) ?? 0) + 1);
    received++;
    res.writeHead(204).end();
  });
});
await new Promise((r) => rx.listen(0, '127.0.0.1', r));
const rxUrl = `http://127.0.0.1:${rx.address().port}/hook`;

// ---- the server, in its own process ----
const serverScript = `
  import { startServer } from ${JSON.stringify(pathToFileURL(join(ROOT, 'packages/server/dist/index.js')).href)};
  const s = await startServer({ store: ${JSON.stringify(storeDir)}, listen: '127.0.0.1:0', adminToken: ${JSON.stringify(ADMIN)}, log: false,
    config: { webhookPollMs: 200, webhookConcurrency: 16, webhookBackoffMs: 200, webhookBackoffMaxMs: 2000 } });
  process.stdout.write(JSON.stringify({ url: s.url }) + '\\n');
  process.on('SIGTERM', async () => { await s.close(); process.exit(0); });
`;
const server = spawn(process.execPath, ['--input-type=module', '-e', serverScript], { stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise((res, rej) => {
  let buf = '';
  server.stdout.on('data', (d) => {
    buf += d;
    const line = buf.split('\n').find((l) => l.startsWith('{'));
    if (line) res(JSON.parse(line).url);
  });
  server.on('exit', (code) => rej(new Error(`server exited ${code}`)));
});
const rssOf = (pid) => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (name) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  return { rss: kib('VmRSS') * 1024, hwm: kib('VmHWM') * 1024 };
};
const hard = setTimeout(() => {
  console.error('control-load: not finished in time, giving up');
  server.kill('SIGKILL');
  process.exit(2);
}, (SECONDS + DRAIN_S + 120) * 1000);

const api = async (method, path, body) => {
  const r = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: body && JSON.stringify(body) });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return r.json();
};
const hook = await api('POST', '/webhooks', { name: 'load', url: rxUrl, events: ['push', 'pull'] });

// ---- the clients ----
const shared = randomBytes(256 * 1024);
const hasher = core.createHasher({ threads: 1 });
const stats = { pushes: 0, pulls: 0, errors: [], pushMs: [], pullMs: [] };
const stopAt = Date.now() + SECONDS * 1000;

async function client(i) {
  const driver = createHttpDriver({ url, token: ADMIN, connections: 2, agent: `load-${i}` });
  const store = await core.Store.open(driver);
  const dir = join(work, 'src', `c${i}`);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'shared.bin'), shared);
  try {
    for (let round = 0; Date.now() < stopAt && round < 10_000; round++) {
      const own = randomBytes(FILE_KIB * 1024);
      await writeFile(join(dir, 'own.bin'), own);
      await writeFile(join(dir, 'VERSION'), `app-${i} round ${round}\n`);
      let t0 = performance.now();
      await core.push({ store, hasher, project: 'load', app: `app-${i}`, version: `v${round}`, dir, statCache: false, concurrency: 2 });
      stats.pushMs.push(performance.now() - t0);
      stats.pushes++;
      t0 = performance.now();
      const target = join(work, 'dst', `c${i}`);
      await core.pull({ store, hasher, project: 'load', app: `app-${i}`, version: `v${round}`, target, stateDir: join(work, 'state', `c${i}`), concurrency: 2, fsync: false });
      stats.pullMs.push(performance.now() - t0);
      stats.pulls++;
      if (!(await readFile(join(target, 'own.bin'))).equals(own)) throw new Error(`app-${i}: own.bin differs after pull`);
    }
  } catch (err) {
    stats.errors.push(`client ${i}: ${err?.code ?? ''} ${err?.message ?? err}`);
  } finally {
    await driver.close();
  }
}

let peakSampled = 0;
const sampler = setInterval(() => {
  try {
    peakSampled = Math.max(peakSampled, rssOf(server.pid).rss);
  } catch {}
}, 200);
const t0 = performance.now();
await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i)));
const seconds = (performance.now() - t0) / 1000;

// ---- drain: wait until the outbox is empty and the receiver has everything ----
const depth = async () => Number(/^kk_webhook_queue_depth (\d+)/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1]);
const d0 = performance.now();
for (let i = 0; i < DRAIN_S * 4; i++) {
  if ((await depth()) === 0) break;
  await new Promise((r) => setTimeout(r, 250));
}
const drainS = (performance.now() - d0) / 1000;
await new Promise((r) => setTimeout(r, 1000));
clearInterval(sampler);
const { hwm } = rssOf(server.pid);
server.kill('SIGTERM');
await new Promise((r) => server.on('exit', r));
clearTimeout(hard);
await hasher.close();

// ---- check the database ----
const control = await Control.open(`sqlite://${join(storeDir, 'server', 'kk.db')}`);
const db = control.cdb.db;
const events = await db.selectFrom('events').select(['seq', 'type']).where('type', 'in', ['push', 'pull']).execute();
const deliveries = await db.selectFrom('deliveries').select(['id', 'event_seq', 'state', 'attempts']).where('webhook', '=', hook.id).execute();
await control.close();
rx.close();
const perEvent = new Map();
for (const d of deliveries) perEvent.set(d.event_seq, (perEvent.get(d.event_seq) ?? 0) + 1);
const missing = events.filter((e) => !perEvent.has(e.seq)).length;
const doubled = [...perEvent.values()].filter((n) => n > 1).length;
const notDelivered = deliveries.filter((d) => d.state !== 'delivered').length;
const notReceived = deliveries.filter((d) => !seen.has(d.id)).length;
const receivedTwice = [...seen.values()].filter((n) => n > 1).length;
const retried = deliveries.filter((d) => JSON.parse(d.attempts).length > 1).length;
await rm(work, { recursive: true, force: true });

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : 0;
};
const mib = (n) => (n / 1024 / 1024).toFixed(1);
const ok = stats.errors.length === 0 && missing === 0 && doubled === 0 && notDelivered === 0 && notReceived === 0 && receivedTwice === 0;
console.log(`kk server + control database (SQLite) load: ${CLIENTS} concurrent clients for ${SECONDS} s, each pushing and pulling its own app in a loop; one webhook on push and pull`);
console.log(`  operations:  ${stats.pushes} pushes + ${stats.pulls} pulls in ${seconds.toFixed(1)} s (${((stats.pushes + stats.pulls) / seconds).toFixed(1)}/s), ${stats.errors.length} errors`);
console.log(`  latency:     push p50 ${(pct(stats.pushMs, 50) / 1000).toFixed(2)} s, p95 ${(pct(stats.pushMs, 95) / 1000).toFixed(2)} s; pull p50 ${(pct(stats.pullMs, 50) / 1000).toFixed(2)} s, p95 ${(pct(stats.pullMs, 95) / 1000).toFixed(2)} s`);
console.log(`  events:      ${events.length} push/pull events, ${deliveries.length} delivery rows: ${missing} events without a delivery, ${doubled} with more than one, ${notDelivered} not delivered, ${retried} needed a retry`);
console.log(`  receiver:    ${received} requests, ${seen.size} distinct deliveries, ${notReceived} deliveries never received, ${receivedTwice} received twice; outbox drained ${drainS.toFixed(1)} s after the load`);
console.log(`  server peak RSS: ${mib(hwm)} MiB (VmHWM; sampled max ${mib(peakSampled)} MiB; target < 400 MiB)`);
console.log(`  result:      ${ok ? 'OK' : 'FAILED'}`);
for (const e of stats.errors.slice(0, 10)) console.error(`  ${e}`);
process.exit(ok ? 0 : 1);
