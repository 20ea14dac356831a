// kk through the docker:// store (a real distribution registry on 127.0.0.1, started by the
// testkit) beside the file store (issue 16, acceptance 5): push and pull of the big file and the
// tree, fresh and as an update, with the registry requests each version costs (counted by the
// registry client) and the bytes a pull fetches. In-process (core push/pull), so the requests
// are exact; both stores pay the same disk.
//
//   node bench/docker-store.mjs              full: 1 GiB, 20,000 files -> bench/results/docker-store.{md,json}
//   node bench/docker-store.mjs --quick      32 MiB, 500 files -> bench/results/docker-store-quick.{md,json} (not committed)
//   options: --big-gib N --tree-files N --out PATH --skip-real (no npm pack: no real-upgrade cases)
//
// Real upgrades (acceptance 5): two published releases of an npm package (bench/lib/data.mjs
// ensureRelease), both pushed to the registry; the pull of the new one over the old is counted
// in HTTP bytes (request and status lines, headers, bodies) beside `rsync -a --delete` and `-az`
// over ssh (the testkit's sshd on 127.0.0.1) from the new release onto a copy of the old.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { RELEASE_MTIMES, ensureBig, ensureRelease, ensureTree } from './lib/data.mjs';
import { exec, parseRsyncStats, rmrf, treeBytes } from './lib/util.mjs';

const HERE = import.meta.dirname;
const ROOT = resolve(HERE, '..');
const WORK = join(HERE, '.data', 'docker-work');

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (!a.startsWith('--')) throw new TypeError(`unexpected argument ${a}`);
  if (argv[i + 1] !== undefined && !argv[i + 1].startsWith('--')) opt[a.slice(2)] = argv[++i];
  else opt[a.slice(2)] = true;
}
const quick = !!opt.quick;
const bigBytes = Math.round(Number(opt['big-gib'] ?? (quick ? 1 / 32 : 1)) * 2 ** 30);
const treeFiles = Math.round(Number(opt['tree-files'] ?? (quick ? 500 : 20000)));
const outBase = resolve(ROOT, typeof opt.out === 'string' ? opt.out : `bench/results/${quick ? 'docker-store-quick' : 'docker-store'}`);

// A patch release of a few large files, a native binary, and a major version of thousands of small ones.
const REAL_PACKAGES = [
  { label: 'typescript', name: 'typescript', old: '5.9.2', new: '5.9.3' },
  { label: 'next-swc', name: '@next/swc-linux-x64-gnu', old: '16.4.5', new: '16.4.6' },
  { label: 'date-fns', name: 'date-fns', old: '2.30.0', new: '3.6.0' },
];

const t0 = Date.now();
const log = (...a) => console.error(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s]`, ...a);

const { registryUnavailable, startRegistry } = await import('../packages/testkit/dist/backends/registry.js');
const why = registryUnavailable();
if (why) {
  console.error(`bench/docker-store.mjs: ${why}`);
  process.exit(process.env.CI ? 1 : 0);
}
const { Store, createHasher, push, pull } = await import('../packages/core/dist/index.js');
const { createDockerDriver } = await import('../packages/drivers/dist/docker.js');
const { createFileDriver } = await import('../packages/drivers/dist/file.js');

rmrf(WORK);
mkdirSync(WORK, { recursive: true });
const big = await ensureBig(join(HERE, '.data'), bigBytes, log);
const tree = await ensureTree(join(HERE, '.data'), treeFiles, log);
const reg = await startRegistry();
process.once('SIGINT', () => reg.stop().finally(() => process.exit(130)));
const hasher = createHasher();
const rows = [];
const realRows = [];

try {
  for (const kind of ['file', 'docker']) {
    const open = async () => {
      const driver = kind === 'file' ? createFileDriver({ root: join(WORK, 'file-store') }) : createDockerDriver({ host: reg.host, repository: 'bench/kk', insecure: true });
      return { driver, store: await Store.open(driver, { create: true }) };
    };
    for (const [data, name] of [[big, 'big'], [tree, 'tree']]) {
      const target = join(WORK, `${kind}-${name}-deploy`);
      for (const [step, dir] of [['fresh', data.v1], ['update', data.v2]]) {
        const version = `${name}-${step}`;
        let s = await open();
        let started = performance.now();
        const pushed = await push({ store: s.store, hasher, project: 'bench', app: name, version, dir, statCache: false, stateDir: join(WORK, 'state') });
        const pushS = (performance.now() - started) / 1000;
        const pushRequests = s.driver.client?.requests;
        await s.driver.close();
        s = await open();
        started = performance.now();
        const pulled = await pull({ store: s.store, hasher, project: 'bench', app: name, version, target, stateDir: join(WORK, `state-${kind}`), adopt: true });
        const pullS = (performance.now() - started) / 1000;
        const pullRequests = s.driver.client?.requests;
        await s.driver.close();
        const row = {
          store: kind,
          case: `${name} ${step}`,
          pushS: +pushS.toFixed(2),
          pushRequests: pushRequests ?? null,
          packsUploaded: pushed.packsUploaded,
          bytesUploaded: pushed.bytesUploaded,
          pullS: +pullS.toFixed(2),
          pullRequests: pullRequests ?? null,
          bytesFetched: pulled.bytesFetched,
        };
        rows.push(row);
        log(JSON.stringify(row));
      }
    }
  }

  // ---- real upgrades: bytes on the wire for pulling the new release over the old ----
  if (!opt['skip-real']) {
    const { startSshd, sshdUnavailable } = await import('../packages/testkit/dist/backends/sshd.js');
    const noSsh = sshdUnavailable();
    if (noSsh && process.env.CI) throw new Error(`bench/docker-store.mjs: ${noSsh}`);
    const sshd = noSsh ? undefined : await startSshd();
    try {
      for (const p of REAL_PACKAGES) {
        let oldDir;
        let newDir;
        try {
          oldDir = await ensureRelease(join(HERE, '.data'), p.name, p.old, RELEASE_MTIMES.old, log);
          newDir = await ensureRelease(join(HERE, '.data'), p.name, p.new, RELEASE_MTIMES.new, log);
        } catch (err) {
          realRows.push({ label: p.label, skipped: `npm pack failed: ${String(err.message).split('\n')[0]}` });
          continue;
        }
        const repository = `bench/real-${p.label}`;
        const open = async () => {
          const driver = createDockerDriver({ host: reg.host, repository, insecure: true });
          return { driver, store: await Store.open(driver, { create: true }) };
        };
        const target = join(WORK, `real-${p.label}-deploy`);
        const row = { label: p.label, package: `${p.name} ${p.old} -> ${p.new}`, filesOld: countFiles(oldDir), filesNew: countFiles(newDir), bytesOld: treeBytes(oldDir), bytesNew: treeBytes(newDir) };
        for (const [version, dir] of [['old', oldDir], ['new', newDir]]) {
          const s = await open();
          const pushed = await push({ store: s.store, hasher, project: 'bench', app: p.label, version, dir, statCache: false, stateDir: join(WORK, 'state-real') });
          if (version === 'new') Object.assign(row, { pushNewStored: pushed.bytesUploadedStored, pushNewWire: s.driver.client.bytesSent + s.driver.client.bytesReceived });
          await s.driver.close();
        }
        for (const version of ['old', 'new']) {
          const s = await open();
          const started = performance.now();
          const pulled = await pull({ store: s.store, hasher, project: 'bench', app: p.label, version, target, stateDir: join(WORK, 'state-real-pull'), adopt: true });
          if (version === 'new') {
            const c = s.driver.client;
            Object.assign(row, { pullS: +((performance.now() - started) / 1000).toFixed(2), pullRequests: c.requests, pullWire: c.bytesSent + c.bytesReceived, bytesFetched: pulled.bytesFetched });
          }
          await s.driver.close();
        }
        execFileSync('diff', ['-r', '-q', newDir, target]);
        row.byteExact = true;
        if (sshd) {
          for (const [tool, flags] of [['rsync', []], ['rsyncZ', ['-z']]]) {
            const copy = join(WORK, `real-${p.label}-${tool}`);
            rmrf(copy);
            cpSync(oldDir, copy, { recursive: true, preserveTimestamps: true });
            const r = await exec('rsync', ['-a', '--delete', '--stats', '-e', sshd.sshCommand, ...flags, `${newDir}/`, `${sshd.user}@127.0.0.1:${copy}/`]);
            const st = parseRsyncStats(r.stdout);
            row[tool] = st.sent + st.received;
            rmrf(copy);
          }
        } else row.rsyncMissing = noSsh;
        realRows.push(row);
        log(JSON.stringify(row));
      }
    } finally {
      await sshd?.stop();
    }
  }
} finally {
  await hasher.close();
  await reg.stop();
}

function countFiles(dir) {
  return Number(execFileSync('sh', ['-c', 'find "$1" -type f | wc -l', 'sh', dir]).toString().trim());
}

const env = { cpus: cpus().length, load: loadavg().map((l) => +l.toFixed(1)), bigBytes, treeFiles, date: new Date().toISOString() };
const mib = (b) => (b / 2 ** 20).toFixed(2);
const kib = (b) => (b === undefined ? '-' : (b / 1024).toFixed(1));
const ratio = (a, b) => (a === undefined || !b ? '-' : (a / b).toFixed(2));
const md = [
  `# docker:// store beside the file store (${quick ? 'quick' : 'full'} run)`,
  '',
  `${env.date}, ${env.cpus} CPUs, load ${env.load.join(' ')}; big file ${mib(bigBytes)} MiB, tree ${treeFiles} files. One run per case; registry on 127.0.0.1 (distribution, filesystem storage).`,
  'Update = the v2 of bench/lib/data.mjs (big: 1 MiB inserted, 3 x 64 KiB overwritten; tree: 1% changed, 0.5% deleted, files added); the pull goes onto the v1 deploy directory.',
  '',
  '| store | case | push s | push requests | packs | uploaded MiB | pull s | pull requests | fetched MiB |',
  '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ...rows.map((r) => `| ${r.store} | ${r.case} | ${r.pushS} | ${r.pushRequests ?? '-'} | ${r.packsUploaded} | ${mib(r.bytesUploaded)} | ${r.pullS} | ${r.pullRequests ?? '-'} | ${mib(r.bytesFetched)} |`),
  '',
  ...(realRows.length
    ? [
        '## Real upgrades (acceptance 5): bytes moved by the pull of the new release over the old',
        '',
        'kk: both releases pushed to the registry (packs), the old one pulled, then the new one pulled over it; "wire" = HTTP/1.1 bytes both ways (request and status lines, headers, bodies), every request counted. rsync: `rsync -a --delete [-z] --stats` over ssh (sshd on 127.0.0.1) from the new release onto a copy of the old, sent + received. "store growth" = stored (compressed) bytes of the chunks the push of the new release uploaded.',
        '',
        '| package | files old -> new | size old -> new MiB | kk pull requests | kk pull wire KiB | rsync -a KiB | rsync -az KiB | kk / rsync -az | store growth KiB | growth / rsync -az | byte-exact |',
        '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |',
        ...realRows.map((r) =>
          r.skipped
            ? `| ${r.label} | ${r.skipped} | | | | | | | | | |`
            : `| ${r.package} | ${r.filesOld} -> ${r.filesNew} | ${mib(r.bytesOld)} -> ${mib(r.bytesNew)} | ${r.pullRequests} | ${kib(r.pullWire)} | ${kib(r.rsync)} | ${kib(r.rsyncZ)} | ${ratio(r.pullWire, r.rsyncZ)} | ${kib(r.pushNewStored)} | ${ratio(r.pushNewStored, r.rsyncZ)} | ${r.byteExact ? 'yes' : 'no'} |`,
        ),
        '',
      ]
    : []),
];
mkdirSync(dirname(outBase), { recursive: true });
for (const [ext, body] of [['md', md.join('\n')], ['json', JSON.stringify({ env, rows, real: realRows }, null, 2)]]) {
  writeFileSync(`${outBase}.${ext}.tmp`, body);
  renameSync(`${outBase}.${ext}.tmp`, `${outBase}.${ext}`);
}
console.log(md.join('\n'));
rmrf(WORK);
if (!existsSync(WORK)) log('done');
