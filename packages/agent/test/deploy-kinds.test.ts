// Deploy kinds without a server: shell, tar, kk, health checks, automatic rollback, the journal
// and recovery after a SIGKILL (seed 003).
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Hasher, Store, createHasher, push } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { deploy } from '../src/index.js';

let dir: string;
let n = 0;
const fresh = async () => {
  const d = join(dir, `case-${++n}`);
  await mkdir(d, { recursive: true });
  return d;
};
const statuses = (e: deploy.JournalEntry) => e.history.map((h) => h.status);
const fast = { retries: 2, interval_ms: 50, timeout_ms: 1000, deadline_ms: 5000 };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kk-deploy-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

function deployer(d: string, extra: Partial<deploy.DeployerOptions> = {}) {
  return new deploy.Deployer({ journalDir: join(d, 'journal'), kinds: deploy.defaultKinds(), ...extra });
}

it('shell: runs the script in its workdir with env, captures output, reports stages and a callback with the seed fields', async () => {
  const d = await fresh();
  const reports: deploy.DeployStatusReport[] = [];
  const callbacks: deploy.DeployCallbackPayload[] = [];
  const dep = deployer(d, { onReport: (r) => void reports.push(r), onCallback: (c) => void callbacks.push(c) });
  const e = await dep.deploy('dep-1', { type: 'shell', script: 'echo "$GREETING" > out.txt; echo done; echo warn >&2', workdir: d, env: { GREETING: 'hi there' }, health: { type: 'script', script: `test -f ${d}/out.txt`, ...fast } });
  expect(e.status).toBe('success');
  expect(await readFile(join(d, 'out.txt'), 'utf8')).toBe('hi there\n');
  expect(statuses(e)).toEqual(['pending', 'executing', 'script_running', 'health_check', 'success']);
  expect(reports.map((r) => r.progress)).toEqual([0, 5, 30, 90, 100]);
  expect(e.result).toMatchObject({ exit_code: 0, stdout: 'done\n', stderr: 'warn\n' });
  expect(e.health_check).toMatchObject({ success: true, check_type: 'script', retry_count: 0 });
  expect(callbacks).toHaveLength(1);
  expect(Object.keys(callbacks[0]!).sort()).toEqual(['callback_id', 'command_type', 'deploy_type', 'duration', 'error', 'result', 'status', 'success', 'timestamp']);
  expect(callbacks[0]).toMatchObject({ callback_id: 'dep-1', command_type: 'deploy.shell', deploy_type: 'shell', status: 'success', success: true, error: '' });
  expect(reports.flatMap((r) => r.logs).some((l) => l.endsWith('stdout: done'))).toBe(true);
  const j = JSON.parse(await readFile(join(d, 'journal', 'dep-1.json'), 'utf8'));
  expect(j).toMatchObject({ phase: 'done', reported: true, status: 'success' });
});

it('shell: a script over 100 KB is refused before anything runs', async () => {
  const d = await fresh();
  const e = await deployer(d).deploy('dep-big', { type: 'shell', script: `touch ${d}/ran\n#${'x'.repeat(100 * 1024)}` });
  expect(e.status).toBe('failed');
  expect(e.error_code).toBe('CONFIG_INVALID');
  expect(existsSync(join(d, 'ran'))).toBe(false);
});

it('shell: a script past its timeout ends in timeout, is killed, then the rollback script runs (rolled_back)', async () => {
  const d = await fresh();
  const e = await deployer(d).deploy('dep-t', { type: 'shell', script: `sleep 30; touch ${d}/late`, timeout_ms: 300, workdir: d, rollback_script: 'echo undone > rollback.txt' });
  expect(statuses(e)).toEqual(['pending', 'executing', 'script_running', 'timeout', 'rolling_back', 'rolled_back']);
  expect(e.error_code).toBe('TIMEOUT');
  expect(await readFile(join(d, 'rollback.txt'), 'utf8')).toBe('undone\n');
  expect(e.rollback).toMatchObject({ success: true });
  expect(e.callback).toMatchObject({ status: 'rolled_back', success: false });
  await new Promise((r) => setTimeout(r, 200));
  expect(existsSync(join(d, 'late'))).toBe(false);
});

it('shell: a failing script without a rollback script ends in rollback_failed with the reason; rollback:false stops at failed', async () => {
  const d = await fresh();
  const e = await deployer(d).deploy('dep-f', { type: 'shell', script: 'echo boom >&2; exit 3' });
  expect(statuses(e)).toEqual(['pending', 'executing', 'script_running', 'failed', 'rolling_back', 'rollback_failed']);
  expect(e.error).toContain('code 3: boom');
  expect(e.rollback?.error).toContain('no rollback script');
  const e2 = await deployer(d).deploy('dep-f2', { type: 'shell', script: 'exit 1', rollback: false, rollback_script: `touch ${d}/rb` });
  expect(e2.status).toBe('failed');
  expect(existsSync(join(d, 'rb'))).toBe(false);
});

it('health: http 200-399 passes, 500 fails after the retries; tcp to a closed port fails; the result says how', async () => {
  let code = 500;
  let hits = 0;
  const srv: Server = createServer((req, res) => {
    hits++;
    res.writeHead(req.url === '/health' ? code : 404).end();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  try {
    const bad = await deploy.healthCheck({ type: 'http', port, path: '/health', ...fast });
    expect(bad).toMatchObject({ success: false, check_type: 'http', retry_count: 2, status_code: 500 });
    expect(hits).toBe(3);
    code = 302;
    const good = await deploy.healthCheck({ type: 'http', port, path: '/health', ...fast });
    expect(good).toMatchObject({ success: true, retry_count: 0, status_code: 302 });
    expect(good.response_time).toBeGreaterThanOrEqual(0);
    expect((await deploy.healthCheck({ type: 'tcp', port, ...fast })).success).toBe(true);
  } finally {
    await new Promise((r) => srv.close(r));
  }
  const closed = await deploy.healthCheck({ type: 'tcp', port, retries: 1, interval_ms: 10, timeout_ms: 500 });
  expect(closed.success).toBe(false);
  expect(closed.error).toMatch(/ECONNREFUSED/);
  // The deadline bounds the retries.
  const capped = await deploy.healthCheck({ type: 'script', script: 'exit 1', retries: 100, interval_ms: 100, deadline_ms: 350 });
  expect(capped.success).toBe(false);
  expect(capped.retry_count).toBeLessThan(4);
});

function tarGz(out: string, cwd: string, members: string[], extra: string[] = []) {
  execFileSync('tar', [...extra, '-czf', out, '-C', cwd, ...members]);
}

it('tar: extracted into the directory with progress 0 -> 30 -> 60 -> 90 -> 100; a failing install script puts the previous tree back byte-exactly', async () => {
  const d = await fresh();
  const src = join(d, 'src');
  await mkdir(join(src, 'v1', 'sub'), { recursive: true });
  await writeFile(join(src, 'v1', 'index.html'), 'v1');
  await writeFile(join(src, 'v1', 'sub', 'a.txt'), 'a1');
  await symlink('sub/a.txt', join(src, 'v1', 'link'));
  tarGz(join(d, 'v1.tar.gz'), join(src, 'v1'), ['.']);
  const sha = execFileSync('sha256sum', [join(d, 'v1.tar.gz')]).toString().split(' ')[0]!;
  const target = join(d, 'app');
  const reports: deploy.DeployStatusReport[] = [];
  const dep = deployer(d, { onReport: (r) => void reports.push(r) });
  const e1 = await dep.deploy('tar-1', { type: 'tar', file: join(d, 'v1.tar.gz'), sha256: sha, path: target, install_script: 'echo installed > installed.txt', health: { type: 'script', script: `test -f ${target}/installed.txt`, ...fast } });
  expect(e1.status, e1.error).toBe('success');
  expect(await readFile(join(target, 'index.html'), 'utf8')).toBe('v1');
  expect(await readFile(join(target, 'link'), 'utf8')).toBe('a1');
  const seen = reports.map((r) => `${r.status}:${r.progress}`);
  expect(seen).toEqual(expect.arrayContaining(['uploading:0', 'extracting:30', 'installing:60', 'installing:90', 'health_check:90', 'success:100']));
  const progress = reports.map((r) => r.progress);
  expect([...progress].sort((a, b) => a - b)).toEqual(progress);

  await mkdir(join(src, 'v2'), { recursive: true });
  await writeFile(join(src, 'v2', 'index.html'), 'v2');
  tarGz(join(d, 'v2.tar.gz'), join(src, 'v2'), ['.']);
  const e2 = await dep.deploy('tar-2', { type: 'tar', file: join(d, 'v2.tar.gz'), path: target, install_script: 'exit 7' });
  expect(statuses(e2)).toEqual(expect.arrayContaining(['installing', 'failed', 'rolling_back', 'rolled_back']));
  expect(e2.bad_version).toMatch(/^[0-9a-f]{64}$/);
  expect(await readFile(join(target, 'index.html'), 'utf8')).toBe('v1');
  expect(await readFile(join(target, 'sub', 'a.txt'), 'utf8')).toBe('a1');
  expect((await readdir(d)).filter((x) => x.startsWith('app.kk-'))).toEqual([]);
  // A wrong digest is refused before extraction.
  const e3 = await dep.deploy('tar-3', { type: 'tar', file: join(d, 'v2.tar.gz'), sha256: sha, path: target, rollback: false });
  expect(e3.error_code).toBe('CHUNK_CORRUPT');
  expect(await readFile(join(target, 'index.html'), 'utf8')).toBe('v1');
});

it('tar: ../x, an absolute path, a symlink pointing out, or a device are refused before anything is written', async () => {
  const d = await fresh();
  const src = join(d, 'src', 'inner');
  await mkdir(src, { recursive: true });
  await writeFile(join(d, 'src', 'x'), 'escape');
  await writeFile(join(src, 'ok.txt'), 'ok');
  await symlink('../../../etc/passwd', join(src, 'evil'));
  const cases: Record<string, () => void> = {
    dotdot: () => tarGz(join(d, 'dotdot.tar.gz'), src, ['ok.txt', '../x'], ['-P']),
    absolute: () => tarGz(join(d, 'absolute.tar.gz'), src, ['ok.txt', join(d, 'src', 'x')], ['-P']),
    symlink: () => tarGz(join(d, 'symlink.tar.gz'), src, ['ok.txt', 'evil']),
    device: () => tarGz(join(d, 'device.tar.gz'), '/dev', ['null']),
  };
  for (const [name, make] of Object.entries(cases)) {
    make();
    const target = join(d, `t-${name}`);
    const e = await deployer(d).deploy(`bad-${name}`, { type: 'tar', file: join(d, `${name}.tar.gz`), path: target, install_script: `touch ${d}/installed-${name}` });
    expect(e.error_code, name).toBe('UNSAFE_PATH');
    expect(existsSync(target), name).toBe(false);
    expect(existsSync(`${target}.kk-staging`), name).toBe(false);
    expect(existsSync(join(d, `installed-${name}`)), name).toBe(false);
  }
  expect(await readFile(join(d, 'src', 'x'), 'utf8')).toBe('escape');
});

let hasher: Hasher;
it('kk: v2 whose health check fails rolls back to v1 from local state (store gone), byte-exactly; v2 marked bad', async () => {
  const d = await fresh();
  hasher = createHasher({ threads: 2 });
  try {
    const storeDir = join(d, 'store');
    const store = await Store.open(createFileDriver({ root: storeDir }), { create: true });
    const build = join(d, 'build');
    await mkdir(build);
    await writeFile(join(build, 'index.html'), 'v1 healthy');
    await writeFile(join(build, 'app.js'), 'one');
    await push({ store, hasher, project: 'p', app: 'web', version: 'v1', dir: build, stateDir: join(d, 'ps') });
    await writeFile(join(build, 'index.html'), 'v2 broken');
    await writeFile(join(build, 'new.js'), 'two');
    await push({ store, hasher, project: 'p', app: 'web', version: 'v2', dir: build, stateDir: join(d, 'ps') });
    await store.driver.close();
    const target = join(d, 'site');
    const stateDir = join(d, 'state');
    let opened = 0;
    const kinds = deploy.defaultKinds({
      kk: {
        hasher,
        stateDir,
        store: async () => {
          opened++;
          if (!existsSync(storeDir)) throw new Error('the store is unreachable');
          return Store.open(createFileDriver({ root: storeDir }));
        },
      },
    });
    const dep = new deploy.Deployer({ journalDir: join(d, 'journal'), kinds });
    // The post hook starts (once) an HTTP server in the directory: 200 when index.html says
    // healthy, 500 otherwise. After v2 is in place the store goes away: the rollback must work
    // from local state alone.
    const port = await freePort();
    const server = `require('http').createServer((q, s) => { const b = require('fs').readFileSync('index.html', 'utf8'); s.writeHead(b.includes('healthy') ? 200 : 500).end(b); }).listen(${port}, '127.0.0.1')`;
    const post = [
      'echo post >> ../hooks.log',
      'if grep -q broken index.html; then mv ../store ../store.away; fi',
      `if ! { [ -f ../server.pid ] && kill -0 "$(cat ../server.pid)" 2>/dev/null; }; then nohup "$NODE" -e "${server.replace(/"/g, '\\"')}" >/dev/null 2>&1 & echo $! > ../server.pid; fi`,
    ].join('\n');
    const health = { type: 'http' as const, port, path: '/', retries: 20, interval_ms: 100, timeout_ms: 1000, deadline_ms: 10_000 };
    const env = { NODE: process.execPath };
    const e1 = await dep.deploy('kk-1', { type: 'kk', project: 'p', app: 'web', version: 'v1', path: target, post, health, env });
    expect(e1.status).toBe('success');
    const e2p = dep.deploy('kk-2', { type: 'kk', project: 'p', app: 'web', version: 'v2', path: target, post, pre: 'echo pre >> ../hooks.log', health, env });
    const e2 = await e2p;
    expect(statuses(e2)).toEqual(['pending', 'executing', 'script_running', 'executing', 'script_running', 'health_check', 'failed', 'rolling_back', 'health_check', 'rolled_back']);
    expect(e2.bad_version).toBe('v2');
    expect(e2.health_check).toMatchObject({ success: false, check_type: 'http', status_code: 500 });
    expect(e2.rollback).toMatchObject({ success: true, to: 'v1', health_check: { success: true, check_type: 'http', status_code: 200 } });
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe('v1 healthy');
    expect(await readFile(join(target, 'index.html'), 'utf8')).toBe('v1 healthy');
    expect(await readFile(join(target, 'app.js'), 'utf8')).toBe('one');
    expect(existsSync(join(target, 'new.js'))).toBe(false);
    expect((await readFile(join(d, 'hooks.log'), 'utf8')).split('\n').filter(Boolean)).toEqual(['post', 'pre', 'post', 'post']);
    expect(existsSync(storeDir)).toBe(false);
    expect(opened).toBeGreaterThan(0);
  } finally {
    const pidFile = join(d, 'server.pid');
    if (existsSync(pidFile)) {
      try {
        process.kill(Number(await readFile(pidFile, 'utf8')), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await hasher.close();
  }
});

it('journal: an agent SIGKILLed during the health check finishes the deploy on restart', async () => {
  const d = await fresh();
  const journalDir = join(d, 'journal');
  const mark = join(d, 'healthy');
  const spec = { type: 'shell', script: `echo v2 > ${d}/release`, rollback_script: `echo v1 > ${d}/release`, health: { type: 'script', script: `test -f ${mark}`, retries: 1000, interval_ms: 100, timeout_ms: 1000, deadline_ms: 120_000 } };
  const child = spawn(process.execPath, [join(import.meta.dirname, 'deploy-crash-child.mjs'), journalDir, JSON.stringify(spec)], { stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    let status = '';
    for (let i = 0; i < 300 && status !== 'health_check'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      status = existsSync(join(journalDir, 'dep-crash.json')) ? JSON.parse(await readFile(join(journalDir, 'dep-crash.json'), 'utf8')).status : '';
    }
    expect(status).toBe('health_check');
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  expect(child.signalCode).toBe('SIGKILL');
  await writeFile(mark, '');
  const callbacks: deploy.DeployCallbackPayload[] = [];
  const dep = new deploy.Deployer({ journalDir, kinds: deploy.defaultKinds() });
  expect((await dep.unreported()).length).toBe(0);
  const done = await dep.recover();
  expect(done.map((e) => e.status)).toEqual(['success']);
  expect(done[0]!.recoveries).toBe(1);
  expect(await readFile(join(d, 'release'), 'utf8')).toBe('v2\n');
  // Not reported yet (no callback sink): kept for the server.
  expect((await dep.unreported()).map((e) => e.id)).toEqual(['dep-crash']);
  const again = new deploy.Deployer({ journalDir, kinds: deploy.defaultKinds(), onCallback: (c) => void callbacks.push(c) });
  expect(await again.recover()).toEqual([]);
  await again.markReported('dep-crash');
  expect(await again.unreported()).toEqual([]);
});

it('journal: killed during the work itself, the restarted agent rolls the deploy back', async () => {
  const d = await fresh();
  const journalDir = join(d, 'journal');
  const spec = { type: 'shell', script: `echo v2 > ${d}/release; touch ${d}/started; sleep 60`, rollback_script: `echo v1 > ${d}/release` };
  const child = spawn(process.execPath, [join(import.meta.dirname, 'deploy-crash-child.mjs'), journalDir, JSON.stringify(spec)], { stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    // Killed once the script runs and the journal names its process group.
    const journalled = async () => existsSync(join(journalDir, 'dep-crash.json')) && (JSON.parse(await readFile(join(journalDir, 'dep-crash.json'), 'utf8')).saved.pgids ?? []).length > 0;
    for (let i = 0; i < 300 && !(existsSync(join(d, 'started')) && (await journalled())); i++) await new Promise((r) => setTimeout(r, 50));
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  // The crashed agent's script is still running; the restarted agent ends it before rolling back.
  const pgids = JSON.parse(await readFile(join(journalDir, 'dep-crash.json'), 'utf8')).saved.pgids as number[];
  expect(pgids).toHaveLength(1);
  expect(existsSync(`/proc/${pgids[0]}`)).toBe(true);
  const done = await new deploy.Deployer({ journalDir, kinds: deploy.defaultKinds() }).recover();
  expect(done.map((e) => e.status)).toEqual(['rolled_back']);
  let alive = true;
  for (let i = 0; i < 100 && alive; i++) {
    alive = existsSync(`/proc/${pgids[0]}`);
    if (alive) await new Promise((r) => setTimeout(r, 20));
  }
  expect(alive).toBe(false);
  expect(await readFile(join(d, 'release'), 'utf8')).toBe('v1\n');
});
