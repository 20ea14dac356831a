// The executor against a real file store and real directories: mirror applies the version byte
// for byte and leaves the default-ignored directories alone; overlay never deletes; include and
// exclude are honoured; failures become outcomes with a code and a reason, leaving the directory.
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

function claim(version: string, target: string, t: Partial<ClaimedTask['target']> = {}, manifest: string | null = null): ClaimedTask {
  return {
    attempt_id: 'at-1',
    lease_ms: 30_000,
    task: { id: 'tk-1', project: 'p', app: 'web', version, manifest, attempts: 1 },
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
