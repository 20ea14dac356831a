// The executor against a real file store and real directories: mirror applies the version byte
// for byte and leaves the default-ignored directories alone; overlay never deletes; include and
// exclude are honoured; skip-existing only adds what is missing; failures become outcomes with a code and a reason, leaving the directory.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Hasher, Store, createHasher, push } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ClaimedTask, PullExecutor, ignoreRules } from '../src/index.js';

let dir: string;
let hasher: Hasher;
let storeUrl: string;

async function tree(root: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(join(root, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) Object.assign(out, await tree(root, p));
    else out[p] = await readFile(join(root, p), 'utf8');
  }
  return out;
}

async function writeTree(root: string, files: Record<string, string>) {
  await rm(root, { recursive: true, force: true });
  for (const [p, body] of Object.entries(files)) {
    await mkdir(join(root, p, '..'), { recursive: true });
    await writeFile(join(root, p), body);
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kk-agent-exec-'));
  hasher = createHasher({ threads: 2 });
  storeUrl = join(dir, 'store');
  const store = await Store.open(createFileDriver({ root: storeUrl }), { create: true });
  const build = join(dir, 'build');
  await writeTree(build, { 'index.html': 'v1 index', 'old.txt': 'only in v1', 'dist/app.js': 'v1 app', 'docs/readme.md': 'v1 docs' });
  await push({ store, hasher, project: 'p', app: 'web', version: 'v1', dir: build, stateDir: join(dir, 'push-state') });
  await writeTree(build, { 'index.html': 'v2 index', 'dist/app.js': 'v2 app', 'dist/new.js': 'v2 new', 'docs/readme.md': 'v2 docs' });
  await push({ store, hasher, project: 'p', app: 'web', version: 'v2', dir: build, stateDir: join(dir, 'push-state') });
  await store.driver.close();
});

afterAll(async () => {
  await hasher?.close();
  await rm(dir, { recursive: true, force: true });
});

function claim(version: string, target: string, t: Partial<ClaimedTask['target']> = {}, manifest: string | null = null, source?: string): ClaimedTask {
  return {
    attempt_id: 'at-1',
    lease_ms: 30_000,
    task: { id: 'tk-1', project: 'p', app: 'web', version, manifest, attempts: 1, ...(source ? { source } : {}) },
    target: { id: 'tg-1', path: target, strategy: 'mirror', include: [], exclude: [], ...t },
  };
}

function recorder() {
  const stages: string[] = [];
  const logs: string[] = [];
  return { stages, logs, ctx: { stage: (s: string) => void stages.push(s), log: (l: string) => void logs.push(l) } };
}

it('ignore rules: the defaults, excludes, and includes as "everything but"', () => {
  expect(ignoreRules({ include: [], exclude: ['*.log'] })).toEqual(['.git/', 'runtime/', 'tmp/', '*.log']);
  expect(ignoreRules({ include: ['dist/**'], exclude: [] })).toEqual(['*', '!*/', '!dist/**', '.git/', 'runtime/', 'tmp/']);
});

it('mirror: v1 then v2 byte for byte; .git/, runtime/ and tmp/ are never touched; result counts', async () => {
  const target = join(dir, 'mirror');
  const ex = new PullExecutor({ storeUrl, hasher, stateDir: join(dir, 'state') });
  const r1 = recorder();
  const o1 = await ex.run(claim('v1', target), r1.ctx);
  expect(o1).toMatchObject({ ok: true, result: { files_added: 4, files_deleted: 0 } });
  await writeTree(join(target, 'runtime'), { 'pid': '42' });
  await mkdir(join(target, '.git'), { recursive: true });
  await writeFile(join(target, '.git', 'HEAD'), 'ref: main');
  const r2 = recorder();
  const o2 = await ex.run(claim('v2', target), r2.ctx);
  expect(o2).toMatchObject({ ok: true, result: { files_added: 1, files_changed: 3, files_deleted: 1, up_to_date: false } });
  expect(await tree(target)).toEqual({ '.git/HEAD': 'ref: main', 'runtime/pid': '42', 'index.html': 'v2 index', 'dist/app.js': 'v2 app', 'dist/new.js': 'v2 new', 'docs/readme.md': 'v2 docs' });
  expect(r2.stages).toContain('commit');
  expect(r2.stages[r2.stages.length - 1]).toBe('done');
  expect(r2.logs[r2.logs.length - 1]).toMatch(/^done: 1 added, 3 changed, 1 deleted/);
});

it('overlay: never deletes what the version lacks, and keeps local files', async () => {
  const target = join(dir, 'overlay');
  const ex = new PullExecutor({ storeUrl, hasher, stateDir: join(dir, 'state') });
  await writeTree(target, { 'local.conf': 'mine' });
  expect((await ex.run(claim('v1', target, { strategy: 'overlay' }), recorder().ctx)).ok).toBe(true);
  const o = await ex.run(claim('v2', target, { strategy: 'overlay' }), recorder().ctx);
  expect(o).toMatchObject({ ok: true, result: { files_deleted: 0 } });
  expect(await tree(target)).toEqual({ 'local.conf': 'mine', 'old.txt': 'only in v1', 'index.html': 'v2 index', 'dist/app.js': 'v2 app', 'dist/new.js': 'v2 new', 'docs/readme.md': 'v2 docs' });
});

it('skip-existing: only files the directory lacks are added; an existing file that differs is left as it is, nothing deleted', async () => {
  const target = join(dir, 'skip-existing');
  const ex = new PullExecutor({ storeUrl, hasher, stateDir: join(dir, 'state') });
  expect((await ex.run(claim('v1', target), recorder().ctx)).ok).toBe(true);
  await writeFile(join(target, 'dist', 'app.js'), 'patched on the node');
  const r = recorder();
  const o = await ex.run(claim('v2', target, { mode: 'skip-existing' }), r.ctx);
  expect(o).toMatchObject({ ok: true, result: { files_added: 1, files_changed: 0, files_deleted: 0 } });
  expect(await readFile(join(target, 'dist', 'app.js'), 'utf8')).toBe('patched on the node');
  expect(await tree(target)).toEqual({ 'index.html': 'v1 index', 'old.txt': 'only in v1', 'dist/app.js': 'patched on the node', 'dist/new.js': 'v2 new', 'docs/readme.md': 'v1 docs' });
  expect(r.logs).toContain(`applying p/web v2 to ${target} (mirror, skip-existing)`);
  // Its verify asks only that every file of the version be there; a missing one is a CONFLICT.
  expect(await ex.run(claim('v2', target, { mode: 'skip-existing' }, null, 'verify'), recorder().ctx)).toMatchObject({ ok: true, result: { verified: true } });
  await rm(join(target, 'dist', 'new.js'));
  expect(await ex.run(claim('v2', target, { mode: 'skip-existing' }, null, 'verify'), recorder().ctx)).toMatchObject({ ok: false, code: 'CONFLICT', reason: expect.stringMatching(/dist\/new\.js \(missing\)/) });
  // The same claim in mode full makes the directory the version again.
  expect(await ex.run(claim('v2', target, { mode: 'full' }), recorder().ctx)).toMatchObject({ ok: true, result: { files_deleted: 1 } });
  expect(await tree(target)).toEqual({ 'index.html': 'v2 index', 'dist/app.js': 'v2 app', 'dist/new.js': 'v2 new', 'docs/readme.md': 'v2 docs' });
});

it('fallback stores (seed 004): with the first store down the next one serves the task, and the log and result say so', async () => {
  const target = join(dir, 'fallback');
  const ex = new PullExecutor({ storeUrl: 'http://127.0.0.1:9', fallbackStores: [storeUrl], rateLimit: 200, hasher, stateDir: join(dir, 'state') });
  const r = recorder();
  const o = await ex.run(claim('v2', target), r.ctx);
  expect(o).toMatchObject({ ok: true, result: { store_fallbacks: [{ from: 'http://127.0.0.1:9/', to: storeUrl }] } });
  expect(r.logs.some((l) => l.startsWith('store http://127.0.0.1:9/ failed') && l.endsWith(`using ${storeUrl}`))).toBe(true);
  expect(await tree(target)).toEqual({ 'index.html': 'v2 index', 'dist/app.js': 'v2 app', 'dist/new.js': 'v2 new', 'docs/readme.md': 'v2 docs' });
});

it('include and exclude: only included paths are applied, excluded ones never', async () => {
  const target = join(dir, 'filtered');
  const ex = new PullExecutor({ storeUrl, hasher, stateDir: join(dir, 'state') });
  expect((await ex.run(claim('v2', target, { include: ['dist/**'], exclude: ['dist/new.js'] }), recorder().ctx)).ok).toBe(true);
  expect(await tree(target)).toEqual({ 'dist/app.js': 'v2 app' });
});

it('failures are outcomes with a code and a reason, and leave the directory as it was', async () => {
  const ex = new PullExecutor({ storeUrl, hasher, stateDir: join(dir, 'state') });
  const unmanaged = join(dir, 'unmanaged');
  await writeTree(unmanaged, { 'precious.txt': 'do not delete' });
  const o = await ex.run(claim('v2', unmanaged), recorder().ctx);
  expect(o).toMatchObject({ ok: false, code: 'TARGET_NOT_MANAGED' });
  expect(await tree(unmanaged)).toEqual({ 'precious.txt': 'do not delete' });
  const missing = await ex.run(claim('v9', join(dir, 'x')), recorder().ctx);
  expect(missing).toMatchObject({ ok: false, code: 'NOT_FOUND' });
  expect((missing as { reason: string }).reason).toMatch(/v9/);
  const wrongManifest = await ex.run(claim('v2', join(dir, 'y'), {}, 'sha256:' + '0'.repeat(64)), recorder().ctx);
  expect(wrongManifest).toMatchObject({ ok: false, code: 'MANIFEST_INVALID' });
  await expect(readdir(join(dir, 'y'))).rejects.toThrow(/ENOENT/);
});

it('verify: OK when the directory holds exactly the version; a file changed locally or an extra one is a CONFLICT naming it', async () => {
  const target = join(dir, 'verified');
  const ex = new PullExecutor({ storeUrl, hasher, stateDir: join(dir, 'state') });
  expect((await ex.run(claim('v2', target), recorder().ctx)).ok).toBe(true);
  expect(await ex.run(claim('v2', target, {}, null, 'verify'), recorder().ctx)).toMatchObject({ ok: true, result: { verified: true, files_checked: 4 } });
  await writeFile(join(target, 'dist', 'app.js'), 'v2 app, edited on the node');
  await writeFile(join(target, 'stray.txt'), 'left here');
  const before = await tree(target);
  const r = recorder();
  const o = await ex.run(claim('v2', target, {}, null, 'verify'), r.ctx);
  expect(o).toMatchObject({ ok: false, code: 'CONFLICT', retryable: false, result: { verified: false } });
  expect((o as { reason: string }).reason).toMatch(/^2 difference\(s\) between .* and v2: dist\/app\.js \(changed locally, modified time changed\); stray\.txt \(not in the version\)$/);
  expect(r.logs).toContain('differs: dist/app.js (changed locally, modified time changed)');
  expect(await tree(target)).toEqual(before); // a verify changes nothing
  // Overlay targets may hold files the version lacks.
  expect(await ex.run(claim('v2', target, { strategy: 'overlay' }, null, 'verify'), recorder().ctx)).toMatchObject({ ok: false, code: 'CONFLICT', reason: expect.not.stringMatching(/stray/) });
});

it('a path outside the allowed roots, a local change with on_local_change: fail, a full disk: each names its cause and leaves the directory', async () => {
  const allowed = join(dir, 'allowed');
  const ex = new PullExecutor({ storeUrl, hasher, stateDir: join(dir, 'state'), allowedRoots: [allowed] });
  const outside = join(dir, 'outside');
  await writeTree(outside, { 'keep.txt': 'mine' });
  const o = await ex.run(claim('v1', outside), recorder().ctx);
  expect(o).toMatchObject({ ok: false, code: 'PATH_NOT_ALLOWED', retryable: false });
  expect((o as { reason: string }).reason).toContain(`target path ${outside} is outside the directories this node allows (${allowed})`);
  expect(await tree(outside)).toEqual({ 'keep.txt': 'mine' });
  expect(await ex.run(claim('v1', join(allowed, 'site')), recorder().ctx)).toMatchObject({ ok: true });

  const guarded = join(allowed, 'site');
  await writeFile(join(guarded, 'index.html'), 'hot fix on the node');
  const before = await tree(guarded);
  const lc = await ex.run(claim('v2', guarded, { on_local_change: 'fail' }), recorder().ctx);
  expect(lc).toMatchObject({ ok: false });
  expect((lc as { reason: string }).reason).toMatch(/index\.html/);
  expect(await tree(guarded)).toEqual(before);

  // A 256 KiB tmpfs as the node's disk (mounting needs root, as in CI).
  const small = join(dir, 'small');
  await mkdir(small, { recursive: true });
  const mounted = await new Promise<boolean>((r) => spawn('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', small], { stdio: 'ignore' }).on('exit', (c) => r(c === 0)).on('error', () => r(false)));
  if (!mounted) {
    if (process.env.CI === 'true') throw new Error('CI must run as root: mounting a small tmpfs failed');
    return;
  }
  try {
    const big = join(dir, 'big');
    await writeTree(big, { 'blob.bin': 'x'.repeat(2 * 1024 * 1024) });
    const store = await Store.open(createFileDriver({ root: storeUrl }));
    await push({ store, hasher, project: 'p', app: 'web', version: 'v3', dir: big, stateDir: join(dir, 'push-state') });
    await store.driver.close();
    const site = join(small, 'site');
    await writeTree(site, {});
    const full = await new PullExecutor({ storeUrl, hasher, stateDir: join(small, 'state') }).run(claim('v3', site), recorder().ctx);
    expect(full).toMatchObject({ ok: false, code: 'DISK_FULL' });
    expect((full as { reason: string }).reason).toMatch(/space/);
    expect(await readdir(site)).toEqual([]);
  } finally {
    await new Promise((r) => spawn('umount', [small], { stdio: 'ignore' }).on('exit', r));
  }
});
