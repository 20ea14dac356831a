// One kk push or pull through the library, in its own process, so bench/run.mjs gets a peak RSS
// per run and does not depend on the CLI. Prints one JSON line: the result object, the time per
// progress phase, and process.resourceUsage().maxRSS.
// --store is a directory (file store) or a store URL (http://... with KK_TOKEN in the environment).
//   node bench/kk-run.mjs push --store DIR --dir SRC --version V [--app A] [--state DIR]
//        [--compression none|brotli:LEVEL] [--packs small|all|none] [--stat-cache] [--threads N]
//   node bench/kk-run.mjs pull --store DIR --target DIR --state DIR --version V [--app A]
//        [--no-fsync] [--threads N]
// Either op also takes --concurrency N (parallel store transfers). A driver that counts its
// traffic (the ssh store) adds `traffic: {sent, received}` (bytes) to the printed line.
import { resolve } from 'node:path';
import { DEFAULT_COMPRESSION, DEFAULT_PACK_POLICY, Store, createHasher, pull, push } from '@kk/core';
import { createFileDriver, openDriver } from '@kk/drivers';

const [op, ...rest] = process.argv.slice(2);
const flags = {};
for (let i = 0; i < rest.length; i++) {
  const a = rest[i];
  if (!a.startsWith('--')) throw new TypeError(`unexpected argument ${a}`);
  const next = rest[i + 1];
  if (next === undefined || next.startsWith('--')) flags[a.slice(2)] = true;
  else flags[a.slice(2)] = rest[++i];
}
const driverFor = (store) => (/^[a-z][a-z0-9+.-]*:\/\//.test(store) ? openDriver(store) : createFileDriver({ root: resolve(store) }));
const need = (name) => {
  if (typeof flags[name] !== 'string') throw new TypeError(`kk-run ${op}: --${name} is required`);
  return flags[name];
};

function packPolicy(spec = 'small') {
  if (spec === 'none') return false;
  if (spec === 'small') return DEFAULT_PACK_POLICY;
  if (spec === 'all') return { mode: 'all', target: DEFAULT_PACK_POLICY.target };
  throw new TypeError(`--packs must be small, all or none, got ${spec}`);
}

function compressionPolicy(spec) {
  if (spec === undefined) return undefined;
  if (spec === 'none') return { ...DEFAULT_COMPRESSION, algorithm: 'none' };
  const m = /^brotli(?::(\d+))?$/.exec(spec);
  if (!m) throw new TypeError(`--compression must be none or brotli[:LEVEL], got ${spec}`);
  return { ...DEFAULT_COMPRESSION, level: m[1] === undefined ? DEFAULT_COMPRESSION.level : Number(m[1]) };
}

// Wall time of each progress phase: from its first event to the next phase's first event.
// 'open' is everything before the first event: store open, pool start, the manifest for a pull.
const t0 = performance.now();
const phases = {};
let current = 'open';
let phaseStart = t0;
const onProgress = (e) => {
  if (e.phase === current) return;
  const now = performance.now();
  phases[current] = (phases[current] ?? 0) + (now - phaseStart);
  current = e.phase;
  phaseStart = now;
};

const hasher = createHasher(flags.threads ? { threads: Number(flags.threads) } : {});
const concurrency = typeof flags.concurrency === 'string' ? { concurrency: Number(flags.concurrency) } : {};
let result;
let opened;
try {
  const project = 'bench';
  const app = typeof flags.app === 'string' ? flags.app : 'app';
  const version = need('version');
  if (op === 'push') {
    const store = (opened = await Store.open(await driverFor(need('store')), {
      create: true,
      compression: compressionPolicy(flags.compression),
      // A new store gets what `kk push` gives it: small chunks in packs (frames), unless told.
      packs: packPolicy(flags.packs),
    }));
    const state = typeof flags.state === 'string' ? resolve(flags.state) : undefined;
    result = await push({
      store, hasher, project, app, version,
      dir: resolve(need('dir')),
      stateDir: state,
      statCache: flags['stat-cache'] ? undefined : false,
      onProgress,
      ...concurrency,
    });
  } else if (op === 'pull') {
    const store = (opened = await Store.open(await driverFor(need('store'))));
    result = await pull({
      store, hasher, project, app, version,
      target: resolve(need('target')),
      stateDir: resolve(need('state')),
      fsync: !flags['no-fsync'],
      onProgress,
      ...concurrency,
    });
    delete result.paths;
  } else {
    throw new TypeError(`usage: kk-run.mjs push|pull ... (got ${op})`);
  }
} finally {
  onProgress({ phase: 'close' });
  await hasher.close();
  await opened?.close();
  onProgress({ phase: 'end' });
}
const ms = (x) => Math.round(x);
process.stdout.write(
  JSON.stringify({
    op,
    wall_ms: ms(performance.now() - t0),
    phases_ms: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, ms(v)])),
    max_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    ...(opened?.driver.traffic ? { traffic: opened.driver.traffic } : {}),
    result,
  }) + '\n',
);
