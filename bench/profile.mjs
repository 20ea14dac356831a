// Where a kk run spends its time: sets up one bench case on the bench's data, runs the measured
// kk push/pull under `node --cpu-prof` (every thread: main and pool workers), and prints wall
// time per phase, the same run without fsync, and the top functions by self time per thread.
//   node bench/profile.mjs CASE [--big-gib N] [--tree-files N] [--top N] [--keep]
//   CASE: big-push-fresh big-push-update big-pull-fresh big-pull-update
//         tree-push-fresh tree-pull-fresh tree-pull-update tree-pull-noop
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ensureBig, ensureTree } from './lib/data.mjs';
import { exec, fmtS, rmrf } from './lib/util.mjs';

const HERE = import.meta.dirname;
const DATA = join(HERE, '.data');
const WORK = join(DATA, 'profile');
const KK_RUN = join(HERE, 'kk-run.mjs');
const [caseId, ...rest] = process.argv.slice(2);
const flag = (n, d) => {
  const i = rest.indexOf(`--${n}`);
  return i < 0 ? d : Number(rest[i + 1]);
};
const top = flag('top', 12);
const log = (...a) => console.error(...a);

const kind = caseId?.split('-')[0];
const op = caseId?.split('-')[1];
const mode = caseId?.split('-')[2];
if (!['big', 'tree'].includes(kind) || !['push', 'pull'].includes(op)) {
  console.error('usage: node bench/profile.mjs big|tree-push|pull-fresh|update|noop');
  process.exit(2);
}
const data = kind === 'big' ? await ensureBig(DATA, Math.round(flag('big-gib', 1) * 2 ** 30), log) : await ensureTree(DATA, flag('tree-files', 20000), log);

async function kk(args, nodeFlags = []) {
  const r = await exec(process.execPath, [...nodeFlags, KK_RUN, ...args]);
  return { seconds: r.seconds, ...JSON.parse(r.stdout.trim().split('\n').pop()) };
}

// A fresh setup per measured run: the store (and for pulls the target and state) as the bench has them.
async function setup(dir) {
  rmrf(dir);
  mkdirSync(dir, { recursive: true });
  const store = join(dir, 'store');
  const target = join(dir, 'target');
  const state = join(dir, 'state');
  if (op === 'push') {
    if (mode === 'update') await kk(['push', '--store', store, '--dir', data.v1, '--version', 'v1']);
    const version = mode === 'update' ? 'v2' : 'v1';
    return ['push', '--store', store, '--dir', mode === 'update' ? data.v2 : data.v1, '--version', version];
  }
  await kk(['push', '--store', store, '--dir', data.v1, '--version', 'v1']);
  await kk(['push', '--store', store, '--dir', data.v2, '--version', 'v2']);
  if (mode === 'update') await kk(['pull', '--store', store, '--target', target, '--state', state, '--version', 'v1']);
  if (mode === 'noop') await kk(['pull', '--store', store, '--target', target, '--state', state, '--version', 'v2']);
  return ['pull', '--store', store, '--target', target, '--state', state, '--version', mode === 'fresh' ? 'v1' : 'v2'];
}

const dir = join(WORK, caseId);
let args = await setup(dir);
const plain = await kk(args);
log(`${caseId}: process ${fmtS(plain.seconds)} s, in-process ${fmtS(plain.wall_ms / 1000)} s, phases ${JSON.stringify(plain.phases_ms)}, rss ${plain.max_rss_mb} MB`);
if (op === 'pull') {
  args = await setup(dir);
  const nofsync = await kk([...args, '--no-fsync']);
  log(`  without fsync of staged files: process ${fmtS(nofsync.seconds)} s, phases ${JSON.stringify(nofsync.phases_ms)}`);
}
args = await setup(dir);
const profDir = join(dir, 'cpuprofile');
mkdirSync(profDir, { recursive: true });
const prof = await kk(args, ['--cpu-prof', '--cpu-prof-dir', profDir]);
log(`  under --cpu-prof: process ${fmtS(prof.seconds)} s, phases ${JSON.stringify(prof.phases_ms)}`);
// Node start-up alone (no kk code): what every kk process pays before the first line of kk runs.
const bare = await exec(process.execPath, ['-e', '0']);
const imports = await exec(process.execPath, ['--input-type=module', '-e', "await import('@kk/core'); await import('@kk/drivers')"], { cwd: HERE });
log(`  node -e 0: ${fmtS(bare.seconds)} s; importing @kk/core + @kk/drivers: ${fmtS(imports.seconds)} s`);

// ---- summarise the profiles: self time per function and per file, per thread ----
for (const file of readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile')).sort()) {
  const p = JSON.parse(readFileSync(join(profDir, file), 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = p.timeDeltas;
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (dt[i] ?? 0));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const fn = new Map();
  const files = new Map();
  for (const [id, us] of self) {
    const cf = byId.get(id).callFrame;
    const where = cf.url ? cf.url.replace(/^file:\/\//, '').replace(/.*\/(packages|node_modules)\//, '$1/') : '';
    const name = `${cf.functionName || '(anonymous)'} ${where ? `${where}:${cf.lineNumber + 1}` : ''}`.trim();
    fn.set(name, (fn.get(name) ?? 0) + us);
    const group = where ? where.replace(/:\d+$/, '') : cf.functionName;
    files.set(group, (files.get(group) ?? 0) + us);
  }
  const idle = fn.get('(idle)') ?? 0;
  const pct = (us) => `${((100 * us) / total).toFixed(1)}%`;
  console.log(`\n## ${file} — ${(total / 1e6).toFixed(2)} s sampled, idle ${pct(idle)}`);
  console.log('top functions (self time):');
  for (const [name, us] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(us).padStart(6)}  ${(us / 1000).toFixed(0).padStart(6)} ms  ${name}`);
  console.log('by file:');
  for (const [name, us] of [...files].sort((a, b) => b[1] - a[1]).slice(0, Math.ceil(top / 2))) console.log(`  ${pct(us).padStart(6)}  ${(us / 1000).toFixed(0).padStart(6)} ms  ${name}`);
}
if (!rest.includes('--keep')) rmrf(dir);
else console.log(`\nprofiles kept in ${profDir}`);
