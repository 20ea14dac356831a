// Frames against per-chunk compression (issue 15 "Compression across small files", acceptance 7;
// packages/core/PACKS.md "Frames"): for a real JavaScript package across a major version and for
// an @aws-sdk tree pushed fresh, the bytes a packed file store grows by, the stored bytes a pull
// of the upgrade reads from it, and the bytes `rsync -az --delete` moves over ssh for the same
// upgrade (our own sshd on 127.0.0.1, startSshd() from @kk/testkit; local rsync does not
// compress). kk runs in this process through the library; timings are wall clock and noisy.
// "chunk bytes read" is Store.chunkBytesRead (what the bench's bytesFetched should be), "all
// bytes read" adds the ref, the manifest and the chunk map the pull reads.
//
//   node bench/frames.mjs                    date-fns 2.30.0 -> 3.6.0 and node_modules/@aws-sdk
//   options: --cases date-fns,aws-sdk --json PATH (also write the figures as JSON)
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULT_FRAME_POLICY, DEFAULT_PACK_POLICY, Store, createHasher, pull, push } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { RELEASE_MTIMES, ensureRelease } from './lib/data.mjs';
import { exec, fmtBytes, parseRsyncStats, rmrf, round, treeBytes } from './lib/util.mjs';

const HERE = import.meta.dirname;
const ROOT = resolve(HERE, '..');
const DATA = join(HERE, '.data');

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (!a.startsWith('--')) throw new TypeError(`unexpected argument ${a}`);
  opt[a.slice(2)] = argv[i + 1] !== undefined && !argv[i + 1].startsWith('--') ? argv[++i] : true;
}
const onlyCases = typeof opt.cases === 'string' ? new Set(opt.cases.split(',')) : undefined;
const t0 = Date.now();
const log = (...a) => console.error(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s]`, ...a);

const MODES = [
  { name: 'per-chunk', packs: { ...DEFAULT_PACK_POLICY, frames: false } },
  { name: 'frames q3 (the store level)', packs: { ...DEFAULT_PACK_POLICY, frames: { ...DEFAULT_FRAME_POLICY, level: 3 } } },
  { name: 'frames (default, q5)', packs: DEFAULT_PACK_POLICY },
];

const cases = [];
if (!onlyCases || onlyCases.has('date-fns')) {
  cases.push({
    id: 'date-fns 2.30.0 -> 3.6.0',
    old: await ensureRelease(DATA, 'date-fns', '2.30.0', RELEASE_MTIMES.old, log),
    new: await ensureRelease(DATA, 'date-fns', '3.6.0', RELEASE_MTIMES.new, log),
  });
}
const aws = join(ROOT, 'node_modules', '@aws-sdk');
if ((!onlyCases || onlyCases.has('aws-sdk')) && existsSync(aws)) cases.push({ id: 'node_modules/@aws-sdk (fresh)', new: aws });

const { startSshd, sshdUnavailable } = await import('../packages/testkit/dist/backends/sshd.js');
const why = sshdUnavailable();
if (why) {
  console.error(`bench/frames.mjs: ${why}`);
  process.exit(process.env.CI ? 1 : 0);
}
const sshd = await startSshd();
const hasher = createHasher({});
const work = mkdtempSync(join(tmpdir(), 'kk-frames-'));
const fileCount = (dir) => Number(execFileSync('sh', ['-c', `find "${dir}" -type f | wc -l`], { encoding: 'utf8' }).trim());

/** Bytes rsync -az --delete moves over ssh to turn a copy of `old` (or nothing) into `next`. */
async function rsyncZ(old, next, dst) {
  mkdirSync(dst, { recursive: true });
  if (old) cpSync(old, dst, { recursive: true, preserveTimestamps: true });
  const r = await exec('rsync', ['-az', '--delete', '--stats', '-e', sshd.sshCommand, `${next}/`, `${sshd.user}@127.0.0.1:${dst}/`]);
  const s = parseRsyncStats(r.stdout);
  return { bytes: s.sent + s.received, seconds: r.seconds };
}

/** A file driver that counts the bytes every get returns. */
function countingDriver(root) {
  const driver = createFileDriver({ root });
  const get = driver.get.bind(driver);
  const seen = { bytes: 0, requests: 0 };
  driver.get = async (key, range) => {
    const b = await get(key, range);
    seen.requests++;
    if (b) seen.bytes += b.length;
    return b;
  };
  return { driver, seen };
}

const results = [];
try {
  for (const c of cases) {
    const row = { case: c.id, files_old: c.old ? fileCount(c.old) : 0, files_new: fileCount(c.new), bytes_new: treeBytes(c.new), modes: {} };
    log(c.id, `${row.files_old} -> ${row.files_new} files`);
    for (const mode of MODES) {
      const dir = join(work, `${results.length}-${mode.name}`);
      const storeDir = join(dir, 'store');
      const store = await Store.open(createFileDriver({ root: storeDir }), { create: true, packs: mode.packs });
      if (c.old) await push({ store, hasher, project: 'bench', app: 'pkg', version: 'old', dir: c.old, statCache: false, deltas: false });
      const before = existsSync(storeDir) ? treeBytes(storeDir) : 0;
      const p0 = performance.now();
      const pushed = await push({ store, hasher, project: 'bench', app: 'pkg', version: 'new', dir: c.new, statCache: false, deltas: false });
      const pushMs = performance.now() - p0;
      const growth = treeBytes(storeDir) - before;
      await store.close();
      const target = join(dir, 'target');
      if (c.old) {
        const s = await Store.open(createFileDriver({ root: storeDir }));
        await pull({ store: s, hasher, project: 'bench', app: 'pkg', version: 'old', target, stateDir: join(dir, 'state') });
        await s.close();
      }
      const { driver, seen } = countingDriver(storeDir);
      const s = await Store.open(driver);
      const q0 = performance.now();
      await pull({ store: s, hasher, project: 'bench', app: 'pkg', version: 'new', target, stateDir: join(dir, 'state') });
      const pullMs = performance.now() - q0;
      row.modes[mode.name] = {
        store_growth: growth,
        manifest_and_maps: growth - pushed.bytesUploadedStored,
        push_stored: pushed.bytesUploadedStored,
        pull_read: seen.bytes,
        pull_chunk_bytes: s.chunkBytesRead,
        pull_requests: seen.requests,
        push_s: round(pushMs / 1000, 2),
        pull_s: round(pullMs / 1000, 2),
      };
      await s.close();
      log(' ', mode.name, JSON.stringify(row.modes[mode.name]));
      rmrf(dir);
    }
    const r = await rsyncZ(c.old, c.new, join(work, `${results.length}-rsync`));
    row.rsync_az = r.bytes;
    row.rsync_s = round(r.seconds, 2);
    log('  rsync -az', r.bytes);
    results.push(row);
  }
} finally {
  await hasher.close();
  await sshd.stop();
  rmrf(work);
}

const x = (a, b) => (b ? `${(a / b).toFixed(2)}x` : '–');
const lines = [
  '| case | files | mode | store growth | pull: chunk bytes read | pull: all bytes read | rsync -az | chunks / rsync | all / rsync | growth / rsync | push s | pull s |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|',
];
for (const r of results) {
  for (const [name, m] of Object.entries(r.modes)) {
    lines.push(
      `| ${r.case} | ${r.files_old} -> ${r.files_new} | ${name} | ${fmtBytes(m.store_growth)} | ${fmtBytes(m.pull_chunk_bytes)} | ${fmtBytes(m.pull_read)} | ${fmtBytes(r.rsync_az)} | ${x(m.pull_chunk_bytes, r.rsync_az)} | ${x(m.pull_read, r.rsync_az)} | ${x(m.store_growth, r.rsync_az)} | ${m.push_s} | ${m.pull_s} |`,
    );
  }
}
console.log(lines.join('\n'));
if (typeof opt.json === 'string') writeFileSync(resolve(opt.json), JSON.stringify({ date: new Date().toISOString(), results }, null, 2) + '\n');
