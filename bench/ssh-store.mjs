// kk through the ssh store against rsync -a over the same sshd (issue 14, acceptance 3): push
// and pull of the big file and the tree, fresh and update, plus a real package upgrade's bytes
// on the wire, and the acceptance-2 checks at full size (byte-exact pull, no chunk on a second
// push). Everything runs on 127.0.0.1 against our own sshd (startSshd() from @kk/testkit); the
// "remote" directories are on this machine, so both tools pay the same disk.
//
//   node bench/ssh-store.mjs                  full: 1 GiB, 20,000 files -> bench/results/ssh-store.{md,json}
//   node bench/ssh-store.mjs --quick          32 MiB, 500 files -> bench/results/ssh-store-quick.{md,json} (not committed)
//   options: --big-gib N --tree-files N --runs N --cases id,... --out PATH --skip-real --concurrency N
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { RELEASE_MTIMES, ensureBig, ensureRelease, ensureTree } from './lib/data.mjs';
import { exec, fmtBytes, fmtS, median, parseRsyncStats, rmrf, round } from './lib/util.mjs';

const HERE = import.meta.dirname;
const ROOT = resolve(HERE, '..');
const DATA = join(HERE, '.data');
const WORK = join(DATA, 'ssh-work');
const KK_RUN = join(HERE, 'kk-run.mjs');

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (!a.startsWith('--')) throw new TypeError(`unexpected argument ${a}`);
  const k = a.slice(2);
  if (argv[i + 1] !== undefined && !argv[i + 1].startsWith('--')) opt[k] = argv[++i];
  else opt[k] = true;
}
const quick = !!opt.quick;
const num = (k, dflt) => (opt[k] === undefined ? dflt : Number(opt[k]));
const bigBytes = Math.round(num('big-gib', quick ? 1 / 32 : 1) * 2 ** 30);
const treeFiles = Math.round(num('tree-files', quick ? 500 : 20000));
const runs = Math.max(1, Math.round(num('runs', quick ? 1 : 3)));
const concurrency = opt.concurrency === undefined ? undefined : Number(opt.concurrency);
const onlyCases = typeof opt.cases === 'string' ? new Set(opt.cases.split(',')) : undefined;
const wanted = (id) => !onlyCases || onlyCases.has(id) || [...onlyCases].some((c) => id.startsWith(c));
const outBase = resolve(ROOT, typeof opt.out === 'string' ? opt.out : `bench/results/${quick ? 'ssh-store-quick' : 'ssh-store'}`);

const t0 = Date.now();
const log = (...a) => console.error(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s]`, ...a);

const { startSshd, sshdUnavailable } = await import('../packages/testkit/dist/backends/sshd.js');
const why = sshdUnavailable() ?? (hasBin('rsync') ? undefined : 'rsync is not installed');
if (why) {
  console.error(`bench/ssh-store.mjs: ${why}`);
  process.exit(process.env.CI ? 1 : 0);
}
const sshd = await startSshd();
const stop = () => sshd.stop();
process.once('SIGINT', () => stop().finally(() => process.exit(130)));

const storeUrl = (dir) => sshd.storeUrl(dir);
const remote = (dir) => `${sshd.user}@127.0.0.1:${dir}/`;

/** One kk run (bench/kk-run.mjs) in its own process. */
async function kk(op, flags) {
  const args = [KK_RUN, op];
  for (const [k, v] of Object.entries({ ...flags, ...(concurrency ? { concurrency } : {}) })) args.push(`--${k}`, String(v));
  const r = await exec(process.execPath, args);
  const line = JSON.parse(r.stdout.trim().split('\n').pop());
  return { seconds: r.seconds, result: line.result, traffic: line.traffic, rss: line.max_rss_mb };
}

/** rsync over our sshd; returns seconds and the bytes it moved (sent + received). */
async function rsync(src, dst, flags = []) {
  const r = await exec('rsync', ['-a', '--stats', '-e', sshd.sshCommand, ...flags, src, dst]);
  const s = parseRsyncStats(r.stdout);
  return { seconds: r.seconds, bytes: s.sent + s.received, extra: { literal: s.literal, matched: s.matched } };
}

const wire = (t) => (t ? t.sent + t.received : undefined);
const sync = () => execFileSync('sync');

// ---- data ----
const need = (prefix) => ['push-fresh', 'push-update', 'pull-fresh', 'pull-update'].some((c) => wanted(`${prefix}-${c}`));
const big = need('big') ? await ensureBig(DATA, bigBytes, log) : undefined;
const tree = need('tree') ? await ensureTree(DATA, treeFiles, log) : undefined;
rmrf(WORK);
mkdirSync(WORK, { recursive: true });

/** A file store holding v1 (and, with `both`, v2) of `data`, built once through the ssh store. */
const templates = new Map();
async function template(name, data, both) {
  const key = `${name}-${both}`;
  if (!templates.has(key)) {
    const dir = join(WORK, 'tpl', key);
    await kk('push', { store: storeUrl(dir), dir: data.v1, version: 'v1' });
    if (both) await kk('push', { store: storeUrl(dir), dir: data.v2, version: 'v2' });
    templates.set(key, dir);
  }
  return templates.get(key);
}

const results = { machine: {}, cases: {}, checks: {} };
results.machine = {
  date: new Date().toISOString(),
  mode: quick ? 'quick' : 'full',
  cpu: cpus()[0]?.model,
  cores: cpus().length,
  memory_gib: round(totalmem() / 2 ** 30, 1),
  os: release(),
  node: process.version,
  load_average_start: loadavg().map((x) => round(x, 2)),
  git_commit: execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim(),
  runs,
  big_bytes: bigBytes,
  tree_files: treeFiles,
  concurrency: concurrency ?? 'default (8)',
  rsync: execFileSync('rsync', ['--version'], { encoding: 'utf8' }).split('\n')[0],
  ssh: execFileSync('ssh', ['-V'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim() || 'OpenSSH',
};

/** Runs each tool `runs` times, interleaved, each in a fresh directory prepared by `setup`. */
async function runCase(id, tools) {
  if (!wanted(id)) return;
  log(id);
  const samples = Object.fromEntries(tools.map((t) => [t.name, []]));
  for (let i = 0; i < runs; i++) {
    for (const t of tools) {
      const dir = join(WORK, 'run', id, t.name, String(i));
      rmrf(dir);
      mkdirSync(dir, { recursive: true });
      if (t.setup) await t.setup(dir);
      sync();
      samples[t.name].push(await t.run(dir));
      rmrf(dir);
    }
  }
  results.cases[id] = Object.fromEntries(
    Object.entries(samples).map(([name, xs]) => {
      const secs = xs.map((x) => x.seconds);
      const mid = xs.find((x) => x.seconds === median(secs)) ?? xs[0];
      return [name, { median_s: round(median(secs)), min_s: round(Math.min(...secs)), max_s: round(Math.max(...secs)), bytes: mid.bytes ?? null, extra: mid.extra ?? null }];
    }),
  );
}

const kkTool = {
  pushFresh: (src) => ({ name: 'kk-ssh', run: async (dir) => {
    const r = await kk('push', { store: storeUrl(join(dir, 'store')), dir: src, version: 'v1' });
    return { seconds: r.seconds, bytes: wire(r.traffic), extra: { chunksUploaded: r.result.chunksUploaded, chunks: r.result.chunks, rss: r.rss } };
  } }),
  pushUpdate: (tpl, src) => ({
    name: 'kk-ssh',
    setup: async (dir) => exec('cp', ['-al', await tpl(), join(dir, 'store')]),
    run: async (dir) => {
      const r = await kk('push', { store: storeUrl(join(dir, 'store')), dir: src, version: 'v2' });
      return { seconds: r.seconds, bytes: wire(r.traffic), extra: { chunksUploaded: r.result.chunksUploaded, chunks: r.result.chunks, rss: r.rss } };
    },
  }),
  pull: (tpl, version, before) => ({
    name: 'kk-ssh',
    // The setup pull reads the template as a file store: untimed, and the state is the one kk keeps.
    setup: before ? async (dir) => kk('pull', { store: await tpl(), target: join(dir, 'target'), state: join(dir, 'state'), version: before }) : undefined,
    run: async (dir) => {
      const r = await kk('pull', { store: storeUrl(await tpl()), target: join(dir, 'target'), state: join(dir, 'state'), version });
      return { seconds: r.seconds, bytes: wire(r.traffic), extra: { bytesFetched: r.result.bytesFetched, rss: r.rss } };
    },
  }),
};
const rsyncTool = {
  push: (src, base) => ({
    name: 'rsync-ssh',
    setup: base ? async (dir) => exec('cp', ['-al', base, join(dir, 'target')]) : undefined,
    run: (dir) => rsync(`${src}/`, remote(join(dir, 'target')), ['--delete']),
  }),
  pull: (src, base, name = 'rsync-ssh', flags = []) => ({
    name,
    setup: base ? async (dir) => exec('cp', ['-a', base, join(dir, 'target')]) : undefined,
    run: (dir) => rsync(`${sshd.user}@127.0.0.1:${src}/`, `${join(dir, 'target')}/`, ['--delete', ...flags]),
  }),
};

try {
  for (const [name, data] of [['big', big], ['tree', tree]]) {
    if (!data) continue;
    const v1Store = () => template(name, data, false);
    const bothStore = () => template(name, data, true);
    await runCase(`${name}-push-fresh`, [kkTool.pushFresh(data.v1), rsyncTool.push(data.v1)]);
    await runCase(`${name}-push-update`, [kkTool.pushUpdate(v1Store, data.v2), rsyncTool.push(data.v2, data.v1)]);
    await runCase(`${name}-pull-fresh`, [kkTool.pull(v1Store, 'v1'), rsyncTool.pull(data.v1)]);
    await runCase(`${name}-pull-update`, [kkTool.pull(bothStore, 'v2', 'v1'), rsyncTool.pull(data.v2, data.v1)]);
  }

  // Acceptance 2 at full size: pull back byte-exactly; the same tree again sends no chunk.
  if (wanted('checks')) {
    for (const [name, data] of [['big', big], ['tree', tree]]) {
      if (!data) continue;
      log(`checks: ${name}`);
      const store = await template(name, data, false);
      const target = join(WORK, 'check', name);
      rmrf(target);
      await kk('pull', { store: storeUrl(store), target, state: join(WORK, 'check', `${name}-state`), version: 'v1' });
      const diff = (await exec('rsync', ['-rcn', '--delete', '--itemize-changes', `${data.v1}/`, `${target}/`])).stdout.trim();
      const again = await kk('push', { store: storeUrl(store), dir: data.v1, version: 'v1-again' });
      results.checks[name] = { pull_byte_exact: diff === '', rsync_rcn_output: diff.slice(0, 500), second_push_chunks_uploaded: again.result.chunksUploaded, second_push_wire_bytes: wire(again.traffic) };
      rmrf(target);
    }
  }

  // A real upgrade: bytes on the wire for pulling the new release over the old.
  if (!opt['skip-real'] && wanted('real-upgrade')) {
    let oldDir;
    let newDir;
    try {
      oldDir = await ensureRelease(DATA, 'typescript', '5.9.2', RELEASE_MTIMES.old, log);
      newDir = await ensureRelease(DATA, 'typescript', '5.9.3', RELEASE_MTIMES.new, log);
    } catch (err) {
      results.cases['real-upgrade/typescript'] = { skipped: `npm pack failed: ${String(err.message).split('\n')[0]}` };
    }
    if (oldDir) {
      const tpl = async () => {
        const dir = join(WORK, 'tpl', 'typescript');
        if (!existsSync(dir)) {
          await kk('push', { store: dir, dir: oldDir, version: 'v1' });
          await kk('push', { store: dir, dir: newDir, version: 'v2' });
        }
        return dir;
      };
      await runCase('real-upgrade/typescript', [kkTool.pull(tpl, 'v2', 'v1'), rsyncTool.pull(newDir, oldDir), rsyncTool.pull(newDir, oldDir, 'rsync-ssh-z', ['-z'])]);
    }
  }
} finally {
  results.machine.load_average_end = loadavg().map((x) => round(x, 2));
  await stop();
  rmrf(WORK);
}

// ---- report ----
const ratio = (id, metric = 'median_s') => {
  const c = results.cases[id];
  if (!c?.['kk-ssh'] || !c['rsync-ssh']) return undefined;
  return c['kk-ssh'][metric] / c['rsync-ssh'][metric];
};
const targets = [
  ['tree-push-fresh', 'time', 1.0, ratio('tree-push-fresh')],
  ['tree-pull-update', 'time', 0.5, ratio('tree-pull-update')],
  ['big-pull-update', 'time', 0.5, ratio('big-pull-update')],
];
const ru = results.cases['real-upgrade/typescript'];
if (ru?.['kk-ssh'] && ru['rsync-ssh-z']) targets.push(['real-upgrade/typescript', 'bytes on the wire vs rsync -z', 1.0, ru['kk-ssh'].bytes / ru['rsync-ssh-z'].bytes]);
results.targets = targets.map(([id, what, target, r]) => ({ case: id, what, target, ratio: r === undefined ? null : round(r), met: r === undefined ? null : r <= target }));

const lines = [];
const m = results.machine;
lines.push(`# kk bench: the ssh store (${m.mode} run)`, '');
lines.push(`${m.date.slice(0, 16).replace('T', ' ')} UTC, commit ${m.git_commit}. ${m.cores} × ${m.cpu}, ${m.memory_gib} GiB, Linux ${m.os}, Node ${m.node}; ${m.rsync}; ${m.ssh}.`);
lines.push(`Load average at start ${m.load_average_start.join(' / ')}, at end ${m.load_average_end.join(' / ')} (1/5/15 min; the machine is shared with other work).`, '');
lines.push(`Data: big = ${fmtBytes(bigBytes)} incompressible file; tree = ${treeFiles} files of 100 B–64 KiB (the same generators as bench/run.mjs). Both tools talk to the same sshd on 127.0.0.1 and the "remote" directories are on this machine's disk.`);
lines.push(`Method: wall clock of each command as a child process (kk: node bench/kk-run.mjs with an ssh:// store, default settings${concurrency ? `, --concurrency ${concurrency}` : ''}; rsync -a --delete -e ssh), \`sync\` before each timed run, median of ${runs} run(s), tools interleaved. "bytes" = bytes on the wire: kk's ssh sessions (requests + replies, framing included), rsync's sent + received from --stats.`, '');
lines.push('## Targets (issue 14, acceptance 3)', '', '| case | measure | kk / rsync | target | met |', '| --- | --- | ---: | ---: | :---: |');
for (const t of results.targets) lines.push(`| ${t.case} | ${t.what} | ${t.ratio ?? '–'} | ≤ ${t.target} | ${t.met === null ? '–' : t.met ? 'yes' : '**no**'} |`);
lines.push('', '## Cases', '', '| case | tool | median s | min s | max s | bytes on the wire | notes |', '| --- | --- | ---: | ---: | ---: | ---: | --- |');
for (const [id, c] of Object.entries(results.cases)) {
  if (c.skipped) {
    lines.push(`| ${id} | – | – | – | – | – | skipped: ${c.skipped} |`);
    continue;
  }
  for (const [tool, r] of Object.entries(c)) {
    const notes = r.extra ? Object.entries(r.extra).filter(([, v]) => v !== undefined).map(([k, v]) => `${k} ${typeof v === 'number' && /ytes|literal|matched/.test(k) ? fmtBytes(v) : v}`).join(', ') : '';
    lines.push(`| ${id} | ${tool} | ${fmtS(r.median_s)} | ${fmtS(r.min_s)} | ${fmtS(r.max_s)} | ${r.bytes === null ? '–' : fmtBytes(r.bytes)} | ${notes} |`);
  }
}
if (Object.keys(results.checks).length) {
  lines.push('', '## Acceptance 2 at full size', '', '| data | pull byte-exact (rsync -rcn) | second push: chunks uploaded | second push: bytes on the wire |', '| --- | :---: | ---: | ---: |');
  for (const [name, c] of Object.entries(results.checks)) lines.push(`| ${name} | ${c.pull_byte_exact ? 'yes' : '**no**'} | ${c.second_push_chunks_uploaded} | ${fmtBytes(c.second_push_wire_bytes)} |`);
}
mkdirSync(dirname(outBase), { recursive: true });
writeFileSync(`${outBase}.json.tmp`, JSON.stringify(results, null, 2) + '\n');
renameSync(`${outBase}.json.tmp`, `${outBase}.json`);
writeFileSync(`${outBase}.md`, lines.join('\n') + '\n');
log(`wrote ${outBase}.{md,json}`);
console.log(lines.join('\n'));

function hasBin(bin) {
  return (process.env.PATH ?? '').split(':').some((d) => d && existsSync(join(d, bin)));
}
