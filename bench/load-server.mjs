// Load test of the kk server (issue 5, acceptance 8): N concurrent clients (default 200) each
// push a version of their own app through one server and pull it back, byte-checked. The server
// runs in its own process so its peak RSS (VmHWM) is its own. Traffic stays on 127.0.0.1; every
// client does a bounded number of rounds and the whole run is bounded in time.
//
//   npm run build && node bench/load-server.mjs [--clients 200] [--rounds 1] [--files 12]
//        [--file-kib 64] [--big-kib 768] [--timeout-s 600]
import { spawn } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = resolve(import.meta.dirname, '..');
const core = await import(pathToFileURL(join(ROOT, 'packages/core/dist/index.js')).href);
const drivers = await import(pathToFileURL(join(ROOT, 'packages/drivers/dist/http.js')).href);

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, '')] = Number(argv[i + 1]);
const CLIENTS = opt.clients ?? 200;
const ROUNDS = opt.rounds ?? 1;
const FILES = opt.files ?? 12;
const FILE_KIB = opt['file-kib'] ?? 64;
const BIG_KIB = opt['big-kib'] ?? 768;
const TIMEOUT_S = opt['timeout-s'] ?? 600;

const work = await mkdtemp(join(tmpdir(), 'kk-load-'));
const ADMIN = randomBytes(24).toString('hex');

// ---- the server, in its own process ----
const serverScript = `
  import { startServer } from ${JSON.stringify(pathToFileURL(join(ROOT, 'packages/server/dist/index.js')).href)};
  const s = await startServer({ store: ${JSON.stringify(join(work, 'store'))}, listen: '127.0.0.1:0', adminToken: ${JSON.stringify(ADMIN)}, log: false });
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
let peakSampled = 0;
const sampler = setInterval(() => {
  try {
    peakSampled = Math.max(peakSampled, rssOf(server.pid).rss);
  } catch {}
}, 100);

const deadline = setTimeout(() => {
  console.error(`load-server: not finished after ${TIMEOUT_S} s, giving up`);
  server.kill('SIGKILL');
  process.exit(2);
}, TIMEOUT_S * 1000);

// ---- the clients' trees: their own files plus one file every app shares (dedup) ----
const shared = randomBytes(BIG_KIB * 1024);
async function makeTree(i, round) {
  const dir = join(work, 'src', `c${i}-r${round}`);
  await mkdir(join(dir, 'lib'), { recursive: true });
  const files = { 'lib/shared.bin': shared, 'VERSION': `app-${i} round ${round}\n` };
  for (let f = 0; f < FILES; f++) files[`lib/part-${f}.bin`] = randomBytes(FILE_KIB * 1024);
  for (const [p, data] of Object.entries(files)) await writeFile(join(dir, p), data);
  return { dir, files };
}

const hasher = core.createHasher({ threads: 1 });
const stats = { pushes: 0, pulls: 0, bytesPushed: 0, bytesSent: 0, bytesPulled: 0, errors: [], pushMs: [], pullMs: [] };

async function client(i) {
  const driver = drivers.createHttpDriver({ url, token: ADMIN, connections: 4, agent: `load-${i}` });
  const store = await core.Store.open(driver);
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const { dir, files } = await makeTree(i, round);
      let t0 = performance.now();
      const pushed = await core.push({ store, hasher, project: 'load', app: `app-${i}`, version: `v${round}`, dir, statCache: false, concurrency: 4 });
      stats.pushMs.push(performance.now() - t0);
      stats.pushes++;
      stats.bytesPushed += pushed.bytes;
      stats.bytesSent += pushed.bytesUploadedStored;
      t0 = performance.now();
      const target = join(work, 'dst', `c${i}`);
      const pulled = await core.pull({ store, hasher, project: 'load', app: `app-${i}`, version: `v${round}`, target, stateDir: join(work, 'state'), concurrency: 4, fsync: false });
      stats.pullMs.push(performance.now() - t0);
      stats.pulls++;
      stats.bytesPulled += pulled.bytesFetched;
      for (const [p, data] of Object.entries(files)) {
        const got = await readFile(join(target, p));
        if (!got.equals(Buffer.from(data))) throw new Error(`app-${i}: ${p} differs after pull`);
      }
      await rm(dir, { recursive: true, force: true });
    }
  } catch (err) {
    stats.errors.push(`client ${i}: ${err?.code ?? ''} ${err?.message ?? err}`);
  } finally {
    await driver.close();
  }
}

const t0 = performance.now();
await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i)));
const seconds = (performance.now() - t0) / 1000;
clearTimeout(deadline);
clearInterval(sampler);
const { hwm } = rssOf(server.pid);
const metrics = await (await fetch(`${url}/metrics`)).text();
server.kill('SIGTERM');
await new Promise((r) => server.on('exit', r));
await hasher.close();
await rm(work, { recursive: true, force: true });

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : 0;
};
const mib = (n) => (n / 1024 / 1024).toFixed(1);
const sum = (name) => [...metrics.matchAll(new RegExp(`^${name}(?:\\{.*\\})? (\\d+)$`, 'gm'))].reduce((s, m) => s + Number(m[1]), 0);
const dedup = sum('kk_dedup_hits_total');
const requests = sum('kk_http_requests_total');
console.log(`kk server load: ${CLIENTS} concurrent clients x ${ROUNDS} round(s), each pushing and pulling its own app (${FILES} x ${FILE_KIB} KiB + a shared ${BIG_KIB} KiB file)`);
console.log(`  time:        ${seconds.toFixed(1)} s, ${stats.pushes} pushes + ${stats.pulls} pulls, ${stats.errors.length} errors, ${requests} HTTP requests (${(requests / seconds).toFixed(0)}/s)`);
console.log(`  throughput:  pushed ${mib(stats.bytesPushed)} MiB (${mib(stats.bytesSent)} MiB sent after dedup), pulled ${mib(stats.bytesPulled)} MiB -> ${((stats.bytesSent + stats.bytesPulled) / 1024 / 1024 / seconds).toFixed(1)} MiB/s through the server; ${dedup} chunk uploads saved by dedup`);
console.log(`  latency:     push p50 ${(pct(stats.pushMs, 50) / 1000).toFixed(2)} s, p95 ${(pct(stats.pushMs, 95) / 1000).toFixed(2)} s; pull p50 ${(pct(stats.pullMs, 50) / 1000).toFixed(2)} s, p95 ${(pct(stats.pullMs, 95) / 1000).toFixed(2)} s`);
console.log(`  server peak RSS: ${mib(hwm)} MiB (VmHWM; sampled max ${mib(peakSampled)} MiB; target < 500 MiB)`);
if (stats.errors.length) {
  for (const e of stats.errors.slice(0, 10)) console.error(`  ${e}`);
  process.exit(1);
}
