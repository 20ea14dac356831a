// kk through the docker:// store (a real distribution registry on 127.0.0.1, started by the
// testkit) beside the file store (issue 16, acceptance 5): push and pull of the big file and the
// tree, fresh and as an update, with the registry requests each version costs (counted by the
// registry client) and the bytes a pull fetches. In-process (core push/pull), so the requests
// are exact; both stores pay the same disk.
//
//   node bench/docker-store.mjs              full: 1 GiB, 20,000 files -> bench/results/docker-store.{md,json}
//   node bench/docker-store.mjs --quick      32 MiB, 500 files -> bench/results/docker-store-quick.{md,json} (not committed)
//   options: --big-gib N --tree-files N --out PATH
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { ensureBig, ensureTree } from './lib/data.mjs';
import { rmrf } from './lib/util.mjs';

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
} finally {
  await hasher.close();
  await reg.stop();
}

const env = { cpus: cpus().length, load: loadavg().map((l) => +l.toFixed(1)), bigBytes, treeFiles, date: new Date().toISOString() };
const mib = (b) => (b / 2 ** 20).toFixed(2);
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
];
mkdirSync(dirname(outBase), { recursive: true });
for (const [ext, body] of [['md', md.join('\n')], ['json', JSON.stringify({ env, rows }, null, 2)]]) {
  writeFileSync(`${outBase}.${ext}.tmp`, body);
  renameSync(`${outBase}.${ext}.tmp`, `${outBase}.${ext}`);
}
console.log(md.join('\n'));
rmrf(WORK);
if (!existsSync(WORK)) log('done');
