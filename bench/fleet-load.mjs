// Fleet load (issue 12, acceptance 4): 50 simulated agents in this one process, 200 targets
// (4 directories per node), one promote: every task must complete. The kk server runs in its own
// process over a file store and its default SQLite control database, so its peak RSS (VmHWM) is
// its own. Each simulated agent enrols with a real registration token, heartbeats, long-polls
// /api/sync/agent/claim, reports a stage and then success (the apply itself is simulated: the
// server's work is what is measured). Claim latency is the round trip of a claim that returned a
// task; queue-to-claim is from the task's creation to its claim.
//
//   npm run build && node bench/fleet-load.mjs [--agents 50] [--targets 200] [--parallel 50]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = resolve(import.meta.dirname, '..');
const imp = (p) => import(pathToFileURL(join(ROOT, p)).href);
const core = await imp('packages/core/dist/index.js');
const { createHttpDriver } = await imp('packages/drivers/dist/http.js');

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, '')] = Number(argv[i + 1]);
const AGENTS = opt.agents ?? 50;
const TARGETS = opt.targets ?? 200;
const PARALLEL = opt.parallel ?? 50;
const LIMIT_S = 170;

const work = await mkdtemp(join(tmpdir(), 'kk-fleet-load-'));
const storeDir = join(work, 'store');
const ADMIN = randomBytes(24).toString('hex');

const serverScript = `
  import { startServer } from ${JSON.stringify(pathToFileURL(join(ROOT, 'packages/server/dist/index.js')).href)};
  const s = await startServer({ store: ${JSON.stringify(storeDir)}, listen: '127.0.0.1:0', adminToken: ${JSON.stringify(ADMIN)}, log: false, config: { hasherThreads: 1 } });
  process.stdout.write(JSON.stringify({ url: s.url }) + '\\n');
  process.on('SIGTERM', async () => { await s.close(); process.exit(0); });
`;
const server = spawn(process.execPath, ['--input-type=module', '-e', serverScript], {
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, KK_FLEET_HEARTBEAT_MS: '5000', KK_FLEET_SWEEP_MS: '1000' },
});
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
let peakSampled = 0;
const sampler = setInterval(() => (peakSampled = Math.max(peakSampled, rssOf(server.pid).rss)), 200);
let stopping = false;
const hard = setTimeout(() => {
  console.error(`fleet-load: not finished within ${LIMIT_S} s, giving up`);
  server.kill('SIGKILL');
  process.exit(2);
}, LIMIT_S * 1000);

const t00 = performance.now();
const step = (what) => process.stderr.write(`fleet-load: ${what} (${((performance.now() - t00) / 1000).toFixed(1)} s)\n`);
step(`server at ${url}`);
const call = async (method, path, body, token = ADMIN, signal) => {
  const r = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body && JSON.stringify(body), signal });
  const text = await r.text();
  if (r.status >= 400) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return { status: r.status, json: text ? JSON.parse(text) : undefined };
};

// ---- a version to promote ----
const src = join(work, 'src');
await mkdir(src, { recursive: true });
await writeFile(join(src, 'index.html'), '<h1>v1</h1>');
const hasher = core.createHasher({ threads: 1 });
const store = await core.Store.open(createHttpDriver({ url, token: ADMIN }));
await core.push({ store, hasher, project: 'fleet', app: 'web', version: 'v1', dir: src, statCache: false });
await store.driver.close();
await hasher.close();

step('v1 pushed');
// ---- agents and targets ----
const reg = (await call('POST', '/api/sync/registration-tokens', { expires: '1h' })).json.token;
const agents = [];
for (let i = 0; i < AGENTS; i++) {
  const a = (await call('POST', '/api/sync/agent/enrol', { registration_token: reg, name: `sim-${i}`, tags: { bench: 'fleet' } }, '')).json;
  agents.push({ name: `sim-${i}`, node: a.node.id, token: a.token });
}
const doc = [`- id: fleet`, `  app: web`, `  sync:`, `    max_parallel_nodes: ${PARALLEL}`, `    nodes:`];
for (let t = 0; t < TARGETS; t++) doc.push(`      - node_id: sim-${t % AGENTS}`, `        target_path: /srv/fleet/site-${Math.floor(t / AGENTS)}`);
const applied = (await call('POST', '/api/sync/targets/apply', { document: doc.join('\n') + '\n', source: 'bench' })).json;
step(`${AGENTS} agents enrolled, ${applied.created.length} targets`);
if (applied.created.length !== TARGETS) throw new Error(`expected ${TARGETS} targets, got ${applied.created.length}`);

// ---- the simulated agents ----
const claimMs = [];
const queueMs = [];
let done = 0;
let errors = 0;
const ctl = new AbortController();
async function runAgent(a) {
  const hb = setInterval(() => void call('POST', `/api/sync/nodes/${a.node}/heartbeat`, { info: { sim: true } }, a.token).catch(() => errors++), 5_000);
  try {
    for (let round = 0; !stopping && round < 10_000; round++) {
      const t0 = performance.now();
      let r;
      try {
        r = await call('POST', '/api/sync/agent/claim?wait_ms=5000', {}, a.token, ctl.signal);
      } catch (err) {
        if (stopping) return;
        errors++;
        await new Promise((res) => setTimeout(res, 500));
        continue;
      }
      if (r.status !== 200) continue;
      const t1 = performance.now();
      claimMs.push(t1 - t0);
      const c = r.json;
      queueMs.push(Date.now() - Date.parse(c.task.created));
      await call('POST', `/api/sync/tasks/${c.task.id}/report`, { attempt_id: c.attempt_id, stage: 'apply', progress: 0.5, logs: [{ line: `simulated apply to ${c.target.path}` }] }, a.token);
      await call('POST', `/api/sync/tasks/${c.task.id}/report`, { attempt_id: c.attempt_id, outcome: { ok: true, result: { files_added: 1, files_changed: 0, files_deleted: 0, bytes_fetched: 11, seconds: 0 } } }, a.token);
      done++;
    }
  } finally {
    clearInterval(hb);
  }
}
const rssBefore = rssOf(server.pid).rss;
const loops = agents.map(runAgent);
const t0 = performance.now();
await call('POST', '/api/v1/promote', { project: 'fleet', app: 'web', version: 'v1' });
let succeeded = 0;
for (let i = 0; i < 10_000 && performance.now() - t0 < (LIMIT_S - 30) * 1000; i++) {
  await new Promise((res) => setTimeout(res, 250));
  const page = (await call('GET', '/api/sync/tasks?project=fleet&status=SUCCESS&limit=500')).json;
  succeeded = page.items.length;
  if (succeeded >= TARGETS) break;
}
const seconds = (performance.now() - t0) / 1000;
step(`${succeeded} tasks done`);
stopping = true;
ctl.abort();
await Promise.allSettled(loops);
const { hwm } = rssOf(server.pid);
clearInterval(sampler);
clearTimeout(hard);
server.kill('SIGTERM');
await new Promise((r) => server.once('exit', r));
await rm(work, { recursive: true, force: true });

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};
const mib = (b) => (b / 1048576).toFixed(0);
const ms = (v) => v.toFixed(0);
console.log(`fleet-load: ${AGENTS} simulated agents, ${TARGETS} targets, max_parallel_nodes ${PARALLEL}; ${cpus().length} cores, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log(`  tasks: ${succeeded}/${TARGETS} SUCCESS in ${seconds.toFixed(1)} s after the promote (${done} reported by the agents; ${errors} request errors)`);
console.log(`  claim round trip (claims that got a task): p50 ${ms(pct(claimMs, 50))} ms, p95 ${ms(pct(claimMs, 95))} ms, max ${ms(Math.max(...claimMs))} ms (n=${claimMs.length})`);
console.log(`  task created -> claimed: p50 ${ms(pct(queueMs, 50))} ms, p95 ${ms(pct(queueMs, 95))} ms`);
console.log(`  server RSS: ${mib(rssBefore)} MiB idle with ${AGENTS} long-polls, peak ${mib(hwm)} MiB (VmHWM; sampled max ${mib(peakSampled)} MiB)`);
if (succeeded < TARGETS) process.exit(1);
