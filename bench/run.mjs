// The side-by-side benchmark (issue 4, and the bench parts of issue 7): kk against rsync (local
// and over ssh to our own sshd on 127.0.0.1), restic and casync on generated data, plus real
// package upgrades fetched with `npm pack`. Every kk run is a child process (bench/kk-run.mjs),
// so its time includes Node's start-up like a peer's does, and its peak RSS is its own.
//
//   npm run bench                     full run -> bench/results/latest.{md,json}
//   npm run bench -- --quick          small sizes, a smoke run -> bench/results/quick.{md,json}
//   options: --big-gib N  --tree-files N  --tree2-files N  --runs N (>= 3)  --cases id,id,...  --out PATH (no extension)
//            --skip-real (no npm pack)  --no-levels (skip bench/compression.mjs in a full run)
import { execFileSync, spawn } from 'node:child_process';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { RELEASE_MTIMES, ensureBig, ensureRebuildTree, ensureRelease, ensureTree } from './lib/data.mjs';
import { casync, detectPeers, restic, rsync } from './lib/peers.mjs';
import { exec, fmtBytes, fmtS, median, rmrf, round, treeBytes } from './lib/util.mjs';

const HERE = import.meta.dirname;
const ROOT = resolve(HERE, '..');
const DATA = join(HERE, '.data');
const WORK = join(DATA, 'work');
const KK_RUN = join(HERE, 'kk-run.mjs');

// ---- options ----
const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (!a.startsWith('--')) throw new TypeError(`unexpected argument ${a}`);
  const [k, inline] = a.slice(2).split('=', 2);
  if (inline !== undefined) opt[k] = inline;
  else if (argv[i + 1] !== undefined && !argv[i + 1].startsWith('--')) opt[k] = argv[++i];
  else opt[k] = true;
}
const quick = !!opt.quick;
const num = (k, dflt) => {
  if (opt[k] === undefined) return dflt;
  const n = Number(opt[k]);
  if (!Number.isFinite(n) || n <= 0) throw new TypeError(`--${k} must be a positive number, got ${opt[k]}`);
  return n;
};
const bigBytes = Math.round(num('big-gib', quick ? 1 / 32 : 1) * 2 ** 30);
const treeFiles = Math.round(num('tree-files', quick ? 500 : 20000));
const tree2Files = Math.round(num('tree2-files', quick ? 300 : 20000));
const runs = Math.round(num('runs', 3));
const hashMib = quick ? 16 : 256;
const onlyCases = typeof opt.cases === 'string' ? new Set(opt.cases.split(',')) : undefined;
const outBase = resolve(ROOT, typeof opt.out === 'string' ? opt.out : `bench/results/${quick ? 'quick' : 'latest'}`);
const REAL_PACKAGES = [
  { label: 'typescript', name: 'typescript', old: '5.9.2', new: '5.9.3', kind: 'JavaScript tree' },
  { label: 'next-swc', name: '@next/swc-linux-x64-gnu', old: '16.4.5', new: '16.4.6', kind: 'native binary' },
  // 5,722 -> 4,782 files, 6.7 -> 22 MB unpacked: many small files across a major version (acceptance 7).
  { label: 'date-fns', name: 'date-fns', old: '2.30.0', new: '3.6.0', kind: 'JavaScript tree, many small files, major version' },
].filter((p) => !quick || p.label === 'typescript');

const t0 = Date.now();
const log = (...a) => console.error(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s]`, ...a);
const wanted = (id) => !onlyCases || onlyCases.has(id) || [...onlyCases].some((c) => id.startsWith(`${c}/`));

// ---- machine and peers ----
const machine = {
  date: new Date().toISOString(),
  mode: quick ? 'quick' : 'full',
  cpu: cpus()[0]?.model,
  cores: cpus().length,
  memory_gib: round(totalmem() / 2 ** 30, 1),
  os: `${release()}`,
  node: process.version,
  load_average_start: loadavg().map((x) => round(x, 2)),
  git_commit: gitCommit(),
  runs,
  big_bytes: bigBytes,
  tree_files: treeFiles,
  tree2_files: tree2Files,
  timing: 'wall clock of each command as a child process (kk: node bench/kk-run.mjs, library call incl. Node start-up), warm page cache, `sync` before each timed run, median of runs',
  peers: {},
};
const peers = detectPeers();
let sshd;
if (!peers.rsync.missing && !peers.sshd.missing) {
  try {
    const { startSshd } = await import('../packages/testkit/dist/backends/sshd.js');
    sshd = await startSshd();
  } catch (err) {
    peers.sshd = { missing: `sshd did not start: ${err.message.split('\n')[0]}` };
  }
}
const missingReason = {
  restic: peers.restic.missing,
  casync: peers.casync.missing,
  'rsync-local': peers.rsync.missing,
  'rsync-local-delta': peers.rsync.missing,
  'rsync-ssh': peers.rsync.missing ?? peers.sshd.missing,
  'rsync-ssh-z': peers.rsync.missing ?? peers.sshd.missing,
};
for (const [k, v] of Object.entries(peers)) machine.peers[k] = v.version ?? `missing: ${v.missing}`;
log(`bench ${machine.mode}: big ${fmtBytes(bigBytes)}, tree ${treeFiles} files, ${runs} runs; load ${machine.load_average_start.join(' ')}`);
for (const [k, v] of Object.entries(peers)) log(`  ${k}: ${v.version ?? `MISSING (${v.missing})`}`);

// ---- kk through the library, one child process per run ----
async function kk(op, flags) {
  const args = [KK_RUN, op];
  for (const [k, v] of Object.entries(flags)) {
    if (v === false || v === undefined) continue;
    args.push(`--${k}`);
    if (v !== true) args.push(String(v));
  }
  const r = await exec(process.execPath, args, { env: KK_ENV });
  const line = JSON.parse(r.stdout.trim().split('\n').pop());
  return { seconds: r.seconds, rss: line.max_rss_mb, result: line.result, phases: line.phases_ms, inprocMs: line.wall_ms };
}
const kkPush = (store, dir, version, extra = {}) => kk('push', { store, dir, version, ...extra });

// ---- the kk server (bench/kk-serve.mjs) over a file store, for the kk-http runs ----
const KK_ENV = { ...process.env, KK_TOKEN: `bench-${process.pid}` };
const servers = new Set();
function kkServer(storeDir) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(HERE, 'kk-serve.mjs'), '--store', storeDir], { env: KK_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const stop = () =>
      new Promise((done) => {
        servers.delete(srv);
        if (child.exitCode !== null || child.signalCode !== null) return done();
        child.once('exit', () => done());
        child.kill('SIGTERM');
      });
    const srv = { stop };
    servers.add(srv);
    child.stderr.on('data', (d) => (err += d));
    child.stdout.on('data', (d) => {
      out += d;
      const line = out.split('\n')[0];
      if (out.includes('\n') && !srv.url) {
        srv.url = line.trim();
        resolvePromise(srv);
      }
    });
    child.once('exit', (code) => {
      if (!srv.url) reject(new Error(`kk server did not start (exit ${code}): ${err.trim().split('\n').slice(-5).join(' ')}`));
    });
  });
}
/** One server per template store, started on first use and stopped at the end. */
const templateServers = new Map();
const serverFor = (storeDir) => {
  if (!templateServers.has(storeDir)) templateServers.set(storeDir, kkServer(storeDir));
  return templateServers.get(storeDir);
};
const kkPull = (store, target, state, version, extra = {}) => kk('pull', { store, target, state, version, ...extra });

// ---- templates: stores built once (untimed) and hard-link copied per run ----
// Safe because kk, restic and casync never modify a stored object in place.
const templates = new Map();
function template(name, build) {
  if (!templates.has(name)) {
    templates.set(
      name,
      (async () => {
        const dir = join(WORK, 'tpl', name);
        rmrf(dir);
        mkdirSync(dir, { recursive: true });
        log(`  (building template ${name})`);
        await build(dir);
        return dir;
      })(),
    );
  }
  return templates.get(name);
}
/** A timed run's output that is exactly a template (same layout) becomes it, saving a rebuild. */
function offerTemplate(name, dir) {
  if (templates.has(name)) return false;
  const tpl = join(WORK, 'tpl', name);
  mkdirSync(dirname(tpl), { recursive: true });
  renameSync(dir, tpl);
  templates.set(name, Promise.resolve(tpl));
  return true;
}
const copyTree = (src, dst, link = false) => exec('cp', [link ? '-al' : '-a', src, dst]);

// `restic init` spends a second on its key derivation: initialise once, copy per run.
const resticEmpty = () => template('restic-empty', (d) => restic.init(join(d, 'repo'))).then((d) => join(d, 'repo'));

// ---- the runner ----
const results = { machine, cases: {} };
const details = {};

/**
 * Runs every available contender `runs` times, interleaved (run 1 of each, then run 2 ...), so a
 * burst of load from elsewhere on the machine hits all of them alike.
 */
async function runCase(id, contenders) {
  if (!wanted(id)) return;
  log(`== ${id}`);
  const samples = new Map(contenders.map((c) => [c.name, []]));
  const failed = new Map();
  for (let r = 0; r < runs; r++) {
    for (const c of contenders) {
      const reason = c.missing ?? missingReason[c.name];
      if (reason || failed.has(c.name)) continue;
      const dir = join(WORK, 'run', id.replace(/\//g, '_'), c.name);
      const ts = performance.now();
      rmrf(dir);
      mkdirSync(dir, { recursive: true });
      try {
        await c.setup?.(dir);
        // Start every timed run with nothing dirty in the page cache: kk's syncfs (and any
        // tool's fsync) would otherwise wait for the previous tool's writeback.
        await exec('sync', []);
        const setupS = (performance.now() - ts) / 1000;
        const m = await c.run(dir);
        samples.get(c.name).push(m);
        if (c.offer) offerTemplate(c.offer, dir);
        log(`  ${c.name.padEnd(20)} ${fmtS(m.seconds).padStart(7)} s  ${m.bytes === undefined ? '' : fmtBytes(m.bytes).padEnd(10)}${m.rss ? `  rss ${m.rss} MB` : ''}  (setup ${fmtS(setupS)} s)`);
      } catch (err) {
        failed.set(c.name, err.message);
        log(`  ${c.name} FAILED: ${err.message}`);
      } finally {
        await c.teardown?.(dir);
        rmrf(dir);
      }
    }
  }
  const out = {};
  const det = {};
  for (const c of contenders) {
    const reason = c.missing ?? missingReason[c.name];
    if (reason) {
      out[c.name] = { missing: true, reason };
      continue;
    }
    if (failed.has(c.name)) {
      out[c.name] = { error: failed.get(c.name) };
      continue;
    }
    const s = samples.get(c.name);
    const secs = s.map((m) => m.seconds);
    const mid = [...s].sort((a, b) => a.seconds - b.seconds)[Math.floor(s.length / 2)];
    const entry = { median_s: round(median(secs)), min_s: round(Math.min(...secs)), max_s: round(Math.max(...secs)) };
    if (c.name.startsWith('kk')) entry.peak_rss_mb = Math.max(...s.map((m) => m.rss ?? 0));
    const bytes = s.map((m) => m.bytes).filter((b) => b !== undefined);
    entry.bytes = bytes.length ? median(bytes) : null;
    out[c.name] = entry;
    det[c.name] = { phases: mid.phases, result: mid.result, extra: mid.extra, inprocMs: mid.inprocMs };
  }
  results.cases[id] = out;
  details[id] = det;
}

// kk contenders share a shape: a push to a fresh or template store, or a pull after a setup pull.
const kkPushFresh = (name, src, extra = {}) => ({
  name,
  async run(dir) {
    const store = join(dir, 'store');
    const r = await kkPush(store, src, 'v1', extra);
    return { ...r, bytes: treeBytes(store) };
  },
});
const kkPullCase = (name, storeTpl, version, before) => ({
  name,
  async setup(dir) {
    if (before) await kkPull(await storeTpl(), join(dir, 'target'), join(dir, 'state'), before);
  },
  async run(dir) {
    const store = await storeTpl();
    const r = await kkPull(store, join(dir, 'target'), join(dir, 'state'), version);
    return { ...r, bytes: r.result.bytesFetched, extra: { manifestBytes: storedManifestBytes(store, r.result.manifest) } };
  },
});
/** Size of a manifest object in a file store: a pull fetches it besides the chunks. */
function storedManifestBytes(store, digest) {
  const hex = String(digest).replace(/^sha256:/, '');
  return treeBytes(join(store, 'manifests', hex.slice(0, 2), hex)) || undefined;
}
/** kk through the http store: the same push or pull against a kk server over the file store. */
const kkHttpPush = (src, version, baseTpl) => {
  let srv;
  return {
    name: 'kk-http',
    async setup(dir) {
      if (baseTpl) await copyTree(await baseTpl(), join(dir, 'store'), true);
      else mkdirSync(join(dir, 'store'));
      srv = await kkServer(join(dir, 'store'));
    },
    async run() {
      const r = await kkPush(srv.url, src, version);
      return { ...r, bytes: r.result.bytesUploadedStored };
    },
    teardown: () => srv?.stop(),
  };
};
const kkHttpPull = (storeTpl, version, before) => ({
  name: 'kk-http',
  async setup(dir) {
    if (before) await kkPull((await serverFor(await storeTpl())).url, join(dir, 'target'), join(dir, 'state'), before);
  },
  async run(dir) {
    const r = await kkPull((await serverFor(await storeTpl())).url, join(dir, 'target'), join(dir, 'state'), version);
    return { ...r, bytes: r.result.bytesFetched };
  },
});
/** rsync `src` onto a target that starts as a copy of `base` (or empty). */
const rsyncCase = (name, src, base, flags, ssh) => ({
  name,
  async setup(dir) {
    if (base) await copyTree(base, join(dir, 'target'));
    else mkdirSync(join(dir, 'target'));
  },
  run: (dir) => rsync(src, join(dir, 'target'), { ssh: ssh ? sshd : undefined, flags }),
});

// Interrupted: stop the servers this run started (their own exit hooks do not run on a signal).
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    Promise.allSettled([...servers].map((x) => x.stop()).concat(sshd ? [sshd.stop()] : [])).finally(() => process.exit(130));
  });
}

// ---- data ----
mkdirSync(DATA, { recursive: true });
rmrf(WORK);
mkdirSync(WORK, { recursive: true });
const needBig = ['big-push-fresh', 'big-push-update', 'big-pull-fresh', 'big-pull-update', 'random-push-compression'].some(wanted);
const needTree = ['tree-push-fresh', 'tree-pull-fresh', 'tree-pull-update', 'tree-pull-noop'].some(wanted);
const big = needBig ? await ensureBig(DATA, bigBytes, log) : undefined;
const tree = needTree ? await ensureTree(DATA, treeFiles, log) : undefined;
const needTree2 = ['tree2-pull-fresh', 'tree2-pull-update', 'tree2-pull-noop'].some(wanted);
const tree2 = needTree2 ? await ensureRebuildTree(DATA, tree2Files, log) : undefined;

try {
  // ---- hash ----
  if (wanted('hash')) {
    log('== hash');
    const r = await exec(process.execPath, [join(HERE, 'hash.mjs'), '--mib', String(hashMib)]);
    const h = JSON.parse(r.stdout);
    const bytes = hashMib * 2 ** 20;
    const names = { kk: 'kk chunk+hash (1 worker)', 'node-crypto': 'node:crypto', 'hash-wasm': 'hash-wasm', openssl: 'openssl dgst' };
    const out = {};
    for (const [key, src] of Object.entries(names)) {
      const s = h.seconds?.[src];
      out[key] = s ? { median_s: round(s.median), min_s: round(s.min), max_s: round(s.max), bytes } : { missing: true, reason: `${src} not measured` };
      if (key === 'kk' && s) out[key].peak_rss_mb = null;
    }
    results.cases.hash = out;
    details.hash = { mb_per_s: h.mb_per_s };
    log(`  MB/s ${JSON.stringify(h.mb_per_s)}`);
  }

  // ---- big ----
  const kkBigV1 = () => template('kk-big-v1', (d) => kkPush(join(d, 'store'), big.v1, 'v1')).then((d) => join(d, 'store'));
  const kkBig = () =>
    template('kk-big', async (d) => {
      await copyTree(await kkBigV1(), join(d, 'store'), true);
      await kkPush(join(d, 'store'), big.v2, 'v2');
    }).then((d) => join(d, 'store'));
  const resticBigV1 = () =>
    template('restic-big-v1', async (d) => {
      await restic.init(join(d, 'repo'));
      await restic.backup(join(d, 'repo'), big.v1, 'v1');
    }).then((d) => join(d, 'repo'));
  const casyncBigV1 = () => template('casync-big-v1', (d) => casync.make(join(d, 'store'), join(d, 'v1.caibx'), join(big.v1, 'big.bin')));
  const casyncBig = () =>
    template('casync-big', async (d) => {
      await copyTree(join(await casyncBigV1(), 'store'), join(d, 'store'), true);
      await copyTree(join(await casyncBigV1(), 'v1.caibx'), join(d, 'v1.caibx'), true);
      await casync.make(join(d, 'store'), join(d, 'v2.caibx'), join(big.v2, 'big.bin'));
    });

  await runCase('big-push-fresh', [
    { ...kkPushFresh('kk', big?.v1), offer: 'kk-big-v1' },
    kkHttpPush(big?.v1, 'v1'),
    {
      name: 'restic',
      offer: 'restic-big-v1',
      setup: async (dir) => copyTree(await resticEmpty(), join(dir, 'repo')),
      run: (dir) => restic.backup(join(dir, 'repo'), big.v1, 'v1'),
    },
    { name: 'casync', offer: 'casync-big-v1', run: (dir) => casync.make(join(dir, 'store'), join(dir, 'v1.caibx'), join(big.v1, 'big.bin')) },
  ]);

  await runCase('big-push-update', [
    {
      name: 'kk',
      offer: 'kk-big',
      setup: async (dir) => copyTree(await kkBigV1(), join(dir, 'store'), true),
      async run(dir) {
        const store = join(dir, 'store');
        const before = treeBytes(store);
        const r = await kkPush(store, big.v2, 'v2');
        return { ...r, bytes: treeBytes(store) - before };
      },
    },
    {
      name: 'restic',
      setup: async (dir) => copyTree(await resticBigV1(), join(dir, 'repo'), true),
      run: (dir) => restic.backup(join(dir, 'repo'), big.v2, 'v2'),
    },
    kkHttpPush(big?.v2, 'v2', kkBigV1),
    {
      name: 'casync',
      offer: 'casync-big',
      async setup(dir) {
        await copyTree(join(await casyncBigV1(), 'store'), join(dir, 'store'), true);
        await copyTree(join(await casyncBigV1(), 'v1.caibx'), join(dir, 'v1.caibx'), true);
      },
      run: (dir) => casync.make(join(dir, 'store'), join(dir, 'v2.caibx'), join(big.v2, 'big.bin')),
    },
  ]);

  await runCase('big-pull-fresh', [
    kkPullCase('kk', kkBig, 'v1'),
    kkHttpPull(kkBig, 'v1'),
    rsyncCase('rsync-local', big?.v1),
    rsyncCase('rsync-ssh', big?.v1, undefined, [], true),
    {
      name: 'restic',
      run: async (dir) => restic.restore(await resticBigV1(), 'v1', join(dir, 'target')),
    },
    {
      name: 'casync',
      setup: (dir) => mkdirSync(join(dir, 'target')),
      run: async (dir) => casync.extract(join(await casyncBig(), 'store'), join(await casyncBig(), 'v1.caibx'), join(dir, 'target', 'big.bin')),
    },
  ]);

  await runCase('big-pull-update', [
    kkPullCase('kk', kkBig, 'v2', 'v1'),
    kkHttpPull(kkBig, 'v2', 'v1'),
    rsyncCase('rsync-local', big?.v2, big?.v1, ['--delete']),
    rsyncCase('rsync-local-delta', big?.v2, big?.v1, ['--delete', '--no-whole-file']),
    rsyncCase('rsync-ssh', big?.v2, big?.v1, ['--delete'], true),
    {
      // Extracting a blob over its old self fails with ESTALE (casync 2): seed from v1 explicitly.
      name: 'casync',
      run: async (dir) =>
        casync.extract(join(await casyncBig(), 'store'), join(await casyncBig(), 'v2.caibx'), join(dir, 'big.bin'), ['--seed-output=no', `--seed=${join(big.v1, 'big.bin')}`]),
    },
  ]);

  // Issue 7, acceptance 2: random data must not pay for compression. Interleaved on/off runs.
  await runCase('random-push-compression', [kkPushFresh('kk', big?.v1), kkPushFresh('kk-compression-off', big?.v1, { compression: 'none' })]);

  // ---- tree ----
  const kkTreeV1 = () => template('kk-tree-v1', (d) => kkPush(join(d, 'store'), tree.v1, 'v1')).then((d) => join(d, 'store'));
  const kkTree = () =>
    template('kk-tree', async (d) => {
      await copyTree(await kkTreeV1(), join(d, 'store'), true);
      await kkPush(join(d, 'store'), tree.v2, 'v2');
    }).then((d) => join(d, 'store'));
  const resticTreeV1 = () =>
    template('restic-tree-v1', async (d) => {
      await restic.init(join(d, 'repo'));
      await restic.backup(join(d, 'repo'), tree.v1, 'v1');
    }).then((d) => join(d, 'repo'));
  const casyncTreeV1 = () => template('casync-tree-v1', (d) => casync.make(join(d, 'store'), join(d, 'v1.caidx'), tree.v1));
  const casyncTree = () =>
    template('casync-tree', async (d) => {
      await copyTree(join(await casyncTreeV1(), 'store'), join(d, 'store'), true);
      await copyTree(join(await casyncTreeV1(), 'v1.caidx'), join(d, 'v1.caidx'), true);
      await casync.make(join(d, 'store'), join(d, 'v2.caidx'), tree.v2);
    });
  const casyncTreeExtract = (name, version, base) => ({
    name,
    setup: async (dir) => (base ? copyTree(base, join(dir, 'target')) : undefined),
    run: async (dir) => casync.extract(join(await casyncTree(), 'store'), join(await casyncTree(), `${version}.caidx`), join(dir, 'target')),
  });

  await runCase('tree-push-fresh', [
    { ...kkPushFresh('kk', tree?.v1), offer: 'kk-tree-v1' },
    kkHttpPush(tree?.v1, 'v1'),
    rsyncCase('rsync-local', tree?.v1),
    rsyncCase('rsync-ssh', tree?.v1, undefined, [], true),
    {
      name: 'restic',
      offer: 'restic-tree-v1',
      setup: async (dir) => copyTree(await resticEmpty(), join(dir, 'repo')),
      run: (dir) => restic.backup(join(dir, 'repo'), tree.v1, 'v1'),
    },
    { name: 'casync', offer: 'casync-tree-v1', run: (dir) => casync.make(join(dir, 'store'), join(dir, 'v1.caidx'), tree.v1) },
  ]);

  await runCase('tree-pull-fresh', [
    kkPullCase('kk', kkTree, 'v1'),
    kkHttpPull(kkTree, 'v1'),
    rsyncCase('rsync-local', tree?.v1),
    rsyncCase('rsync-ssh', tree?.v1, undefined, [], true),
    { name: 'restic', run: async (dir) => restic.restore(await resticTreeV1(), 'v1', join(dir, 'target')) },
    casyncTreeExtract('casync', 'v1'),
  ]);

  await runCase('tree-pull-update', [
    kkPullCase('kk', kkTree, 'v2', 'v1'),
    kkHttpPull(kkTree, 'v2', 'v1'),
    rsyncCase('rsync-local', tree?.v2, tree?.v1, ['--delete']),
    rsyncCase('rsync-local-delta', tree?.v2, tree?.v1, ['--delete', '--no-whole-file']),
    rsyncCase('rsync-ssh', tree?.v2, tree?.v1, ['--delete'], true),
    casyncTreeExtract('casync', 'v2', tree?.v1),
  ]);

  await runCase('tree-pull-noop', [
    kkPullCase('kk', kkTree, 'v2', 'v2'),
    kkHttpPull(kkTree, 'v2', 'v2'),
    rsyncCase('rsync-local', tree?.v2, tree?.v2, ['--delete']),
    rsyncCase('rsync-ssh', tree?.v2, tree?.v2, ['--delete'], true),
    casyncTreeExtract('casync', 'v2', tree?.v2),
  ]);

  // ---- issue 15: the second tree shape, v2 a rebuild (every file rewritten, fresh mtimes, 1% changed) ----
  const kkTree2 = () =>
    template('kk-tree2', async (d) => {
      await kkPush(join(d, 'store'), tree2.v1, 'v1');
      await kkPush(join(d, 'store'), tree2.v2, 'v2');
    }).then((d) => join(d, 'store'));
  // The quick run (CI) compares with local rsync only: over ssh, a 300-file tree measures the handshake.
  const ssh2 = (c) => (quick ? [] : [c]);
  await runCase('tree2-pull-fresh', [kkPullCase('kk', kkTree2, 'v1'), rsyncCase('rsync-local', tree2?.v1), ...ssh2(rsyncCase('rsync-ssh', tree2?.v1, undefined, [], true))]);
  await runCase('tree2-pull-update', [
    kkPullCase('kk', kkTree2, 'v2', 'v1'),
    rsyncCase('rsync-local', tree2?.v2, tree2?.v1, ['--delete']),
    rsyncCase('rsync-local-delta', tree2?.v2, tree2?.v1, ['--delete', '--no-whole-file']),
    ...ssh2(rsyncCase('rsync-ssh', tree2?.v2, tree2?.v1, ['--delete'], true)),
  ]);
  await runCase('tree2-pull-noop', [kkPullCase('kk', kkTree2, 'v2', 'v2'), rsyncCase('rsync-local', tree2?.v2, tree2?.v2, ['--delete']), ...ssh2(rsyncCase('rsync-ssh', tree2?.v2, tree2?.v2, ['--delete'], true))]);

  // ---- issue 7: real upgrades of published packages ----
  for (const p of REAL_PACKAGES) {
    const id = `real-upgrade/${p.label}`;
    if (!wanted(id)) continue;
    let oldDir;
    let newDir;
    let why;
    if (opt['skip-real']) why = '--skip-real';
    else {
      try {
        oldDir = await ensureRelease(DATA, p.name, p.old, RELEASE_MTIMES.old, log);
        newDir = await ensureRelease(DATA, p.name, p.new, RELEASE_MTIMES.new, log);
      } catch (err) {
        why = `npm pack failed: ${err.message.split('\n').slice(0, 3).join(' ')}`;
      }
    }
    const store = () =>
      template(`kk-real-${p.label}`, async (d) => {
        await kkPush(join(d, 'store'), oldDir, 'old');
        await kkPush(join(d, 'store'), newDir, 'new');
      }).then((d) => join(d, 'store'));
    const withMissing = (c) => (why ? { ...c, missing: why } : c);
    await runCase(id, [
      withMissing(kkPullCase('kk', store, 'new', 'old')),
      withMissing(rsyncCase('rsync-ssh', newDir, oldDir, ['--delete'], true)),
      withMissing(rsyncCase('rsync-ssh-z', newDir, oldDir, ['--delete', '-z'], true)),
    ]);
    if (details[id] && !why) details[id].package = { ...p, bytes_old: treeBytes(oldDir), bytes_new: treeBytes(newDir) };
  }

  // ---- compression levels (issue 7), full runs only ----
  if (!quick && !opt['no-levels'] && wanted('compression-levels')) {
    log('== compression levels (bench/compression.mjs)');
    const r = await exec(process.execPath, [join(HERE, 'compression.mjs'), '--json']);
    details['compression-levels'] = JSON.parse(r.stdout);
  }
} finally {
  await Promise.all([...servers].map((x) => x.stop()));
  await sshd?.stop();
  rmrf(WORK);
}

machine.load_average_end = loadavg().map((x) => round(x, 2));
machine.duration_s = Math.round((Date.now() - t0) / 1000);
mkdirSync(dirname(outBase), { recursive: true });
writeFileSync(`${outBase}.json`, JSON.stringify(results, null, 2) + '\n');
writeFileSync(`${outBase}.md`, renderMarkdown());
log(`wrote ${outBase}.md and ${outBase}.json in ${machine.duration_s} s`);

// ---- report ----
function gitCommit() {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim();
    return dirty ? `${head} (+ uncommitted changes)` : head;
  } catch {
    return undefined;
  }
}

function renderMarkdown() {
  const L = [];
  const c = results.cases;
  const ratio = (a, b) => (a === undefined || b === undefined || a === null || b === null || !b ? undefined : a / b);
  const fmtRatio = (x) => (x === undefined ? '–' : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  L.push(`# kk bench: ${machine.mode} run`, '');
  L.push(`${machine.date.slice(0, 16).replace('T', ' ')} UTC, commit ${machine.git_commit ?? '?'}. ${machine.cores} × ${machine.cpu}, ${machine.memory_gib} GiB, Linux ${machine.os}, Node ${machine.node}.`);
  L.push(`Load average at start ${machine.load_average_start.join(' / ')}, at end ${machine.load_average_end.join(' / ')} (1/5/15 min; the machine is shared with other work).`);
  L.push(`Peers: ${Object.entries(machine.peers).map(([k, v]) => `${k} ${v}`).join('; ')}.`, '');
  L.push(`Data: **big** = ${fmtBytes(bigBytes)} incompressible file (v2: 1 MiB inserted at 40%, 64 KiB overwritten at 10/70/90%); ` +
    `**tree** = ${treeFiles} files of 100 B–64 KiB (log-uniform), a third binary, in nested directories (v2: ${tree ? `${tree.summary.changed} changed, ${tree.summary.deleted} deleted, ${tree.summary.added} added` : '1% changed, 0.5% deleted, 100 added'}); ` +
    `**tree2** = ${tree2Files} files of 512 B–96 KiB (log-uniform, ~18 KiB average${tree2 ? `, ${fmtBytes(tree2.summary.bytes)}` : ''}), a third incompressible (v2: a rebuild, every file rewritten with a fresh mtime, ${tree2 ? tree2.summary.changed : '1%'} with changed content).`);
  L.push(`Method: ${machine.timing}; ${runs} runs per tool, interleaved. kk uses a file store with default settings (brotli level 3 when a probe says it pays, fsync on). ` +
    'rsync-ssh goes to our own sshd on 127.0.0.1. kk-http is the same kk run through the http store: the kk server (bench/kk-serve.mjs, its own process) over a file store on 127.0.0.1. ' +
    '"bytes": stored bytes for pushes (store growth; kk-http: bytes sent), bytes transferred for pulls (kk: bytesFetched as stored; rsync: sent + received).', '');

  // Targets first: what the issues ask for.
  const targets = [
    ['big-push-fresh', 'restic', 0.3],
    ['big-pull-fresh', 'rsync-local', 1.2],
    ['big-pull-update', 'rsync-local-delta', 0.5],
    ['big-pull-update', 'rsync-ssh', 0.4],
    ['big-pull-update', 'rsync-ssh', 0.4, 'kk-http'],
    ['tree-pull-fresh', 'rsync-local', 1.0],
    ['tree-pull-update', 'rsync-local', 0.3],
    ['tree-pull-noop', 'rsync-local', 0.6],
    ['tree2-pull-fresh', 'rsync-local', 1.0],
    ['tree2-pull-update', 'rsync-local', 1.5],
    ['tree2-pull-noop', 'rsync-local', 1.5],
    ['random-push-compression', 'kk-compression-off', 1.1],
  ];
  L.push('## Targets (issue 4 acceptance 3; issue 7 acceptance 2 and 3)', '');
  L.push('"kk in-process" is the library call alone (the median run\'s own timer): the difference to "kk median" is Node start-up, module loading, the worker pool and the store opening.', '');
  L.push('| case | kk median | kk in-process | vs | peer median | kk / peer | target | met |', '| --- | ---: | ---: | --- | ---: | ---: | ---: | :---: |');
  for (const [id, peer, goal, who = 'kk'] of targets) {
    const k = c[id]?.[who];
    const p = c[id]?.[peer];
    const r = ratio(k?.median_s, p?.median_s);
    const inproc = details[id]?.[who]?.inprocMs;
    L.push(`| ${id}${who === 'kk' ? '' : ` (${who})`} | ${fmtS(k?.median_s)} s | ${inproc === undefined ? '–' : `${fmtS(inproc / 1000)} s`} | ${peer} | ${p?.missing ? 'missing' : `${fmtS(p?.median_s)} s`} | ${fmtRatio(r)} | ≤ ${goal} | ${r === undefined ? '–' : r <= goal ? 'yes' : '**no**'} |`);
  }
  for (const id of Object.keys(c).filter((x) => x.startsWith('real-upgrade/'))) {
    const r = ratio(c[id].kk?.bytes, c[id]['rsync-ssh-z']?.bytes);
    L.push(`| ${id} (bytes moved) | ${fmtBytes(c[id].kk?.bytes)} | | rsync-ssh-z | ${fmtBytes(c[id]['rsync-ssh-z']?.bytes)} | ${fmtRatio(r)} | ≤ 1.25 | ${r === undefined ? '–' : r <= 1.25 ? 'yes' : '**no**'} |`);
  }
  const rss = Object.entries(c).flatMap(([id, e]) => (e.kk?.peak_rss_mb ? [[id, e.kk.peak_rss_mb]] : []));
  const worst = rss.sort((a, b) => b[1] - a[1])[0];
  if (worst) L.push(`| peak RSS, every kk run | ${worst[1]} MB (${worst[0]}) | | | | | ≤ 300 MB | ${worst[1] <= 300 ? 'yes' : '**no**'} |`);
  L.push('');

  const about = {
    hash: 'SHA-256 of the same in-memory data (bench/hash.mjs); kk = FastCDC chunking + SHA-256 per chunk and per file, one worker. Lower is faster; MB/s below.',
    'big-push-fresh': 'push v1 to an empty store (restic backup to a new repository; casync make).',
    'big-push-update': 'push v2 to a store holding v1; bytes = newly stored.',
    'big-pull-fresh': 'v1 into an empty directory (rsync -a; restic restore; casync extract).',
    'big-pull-update': 'v2 over v1 (rsync -a locally: whole-file, and --no-whole-file: delta; over ssh: delta; casync extract seeding from the old file).',
    'random-push-compression': 'push 1 GiB-class random data (big v1) with the default compression policy (kk) and with compression off (kk-compression-off): two fresh stores per run.',
    'tree-push-fresh': 'push tree v1 to an empty store; rsync copies the tree into an empty directory.',
    'tree-pull-fresh': 'tree v1 into an empty directory.',
    'tree-pull-update': 'tree v2 over v1 (rsync --delete).',
    'tree-pull-noop': 'tree v2 over v2: nothing to do.',
    'tree2-pull-fresh': 'tree2 v1 into an empty directory.',
    'tree2-pull-update': 'tree2 v2 (a rebuild: every mtime new, 1% of contents changed) over v1 (rsync --delete: its quick check sees every file as changed).',
    'tree2-pull-noop': 'tree2 v2 over v2: nothing to do.',
  };
  L.push('## Cases', '');
  for (const [id, entries] of Object.entries(c)) {
    const det = details[id] ?? {};
    L.push(`### ${id}`, '');
    if (about[id]) L.push(about[id], '');
    if (id.startsWith('real-upgrade/') && det.package) {
      const p = det.package;
      L.push(`\`${p.name}\` ${p.old} → ${p.new} (${p.kind}; ${fmtBytes(p.bytes_old)} → ${fmtBytes(p.bytes_new)} unpacked), fetched with npm pack. ` +
        'kk: push both to a file store, pull old, then time the pull of new over old; rsync -a / -az --delete over ssh onto a copy of old. Files carry fixed, distinct mtimes per release, as fresh builds would.', '');
    }
    const k = entries.kk;
    L.push('| tool | median s | min s | max s | bytes | peak RSS MB | kk / tool (time) | kk / tool (bytes) |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const [name, e] of Object.entries(entries)) {
      if (e.missing || e.error) {
        L.push(`| ${name} | ${e.missing ? `missing: ${e.reason}` : `failed: ${e.error.split('\n')[0]}`} | | | | | | |`);
        continue;
      }
      const isKk = name === 'kk';
      L.push(`| ${name} | ${fmtS(e.median_s)} | ${fmtS(e.min_s)} | ${fmtS(e.max_s)} | ${fmtBytes(e.bytes)} | ${e.peak_rss_mb ?? '–'} | ${isKk ? '' : fmtRatio(ratio(k?.median_s, e.median_s))} | ${isKk ? '' : fmtRatio(ratio(k?.bytes, e.bytes))} |`);
    }
    L.push('');
    if (id === 'hash' && det.mb_per_s) L.push(`MB/s (median): ${Object.entries(det.mb_per_s).map(([n, v]) => `${n} ${v}`).join(', ')}. kk's peak RSS is not meaningful here (one process holds the data for every method).`, '');
    const kd = det.kk;
    if (kd?.phases) {
      const phases = Object.entries(kd.phases).map(([p, ms]) => `${p} ${fmtS(ms / 1000)}`).join(', ');
      const r = kd.result ?? {};
      const facts = [];
      if (kd.extra?.manifestBytes) facts.push(`the manifest (fetched besides the chunks, not in bytesFetched) is ${fmtBytes(kd.extra.manifestBytes)} as stored`);
      if (r.chunksFromDeltas) facts.push(`${r.chunksFromDeltas} chunks rebuilt from deltas`);
      if (r.bytesFetchedRaw !== undefined) facts.push(`fetched ${fmtBytes(r.bytesFetched)} as stored (${fmtBytes(r.bytesFetchedRaw)} raw, ${r.chunksFetched} chunks), seeded ${fmtBytes(r.bytesSeeded)} (${r.chunksSeeded} chunks), plan: ${r.plan ? `${r.plan.filesAdded} added, ${r.plan.filesChanged} changed, ${r.plan.filesDeleted} deleted, ${r.plan.filesUnchanged} unchanged` : '–'}`);
      if (r.bytesUploaded !== undefined) facts.push(`uploaded ${fmtBytes(r.bytesUploadedStored)} stored for ${fmtBytes(r.bytesUploaded)} raw (${r.chunksUploaded}/${r.chunks} chunks), hashed ${fmtBytes(r.bytesHashed)}`);
      L.push(`kk, median run: process ${fmtS(entries.kk.median_s)} s, in-process ${fmtS(kd.inprocMs / 1000)} s; phases (s): ${phases}. ${facts.join('; ')}.`, '');
    }
    for (const [name, d] of Object.entries(det)) {
      if (name.startsWith('rsync') && d?.extra?.literal !== undefined) L.push(`${name}: literal ${fmtBytes(d.extra.literal)}, matched ${fmtBytes(d.extra.matched)}.  `);
    }
    L.push('');
  }
  const lv = details['compression-levels'];
  if (lv?.markdown) L.push('## Compression levels (bench/compression.mjs)', '', lv.markdown, '');
  return L.join('\n').replace(/\n{3,}/g, '\n\n');
}
