// Issue 2, acceptance 6: bad input is refused with a clear code and leaves store and target as
// they were.
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KkError, chunkKey, manifestKey, push, pull, sha256Digest, type Digest } from '@kk/core';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
  await mkdir(sb.path('src/sub'), { recursive: true });
  await writeFile(sb.path('src/a.txt'), 'hello a\n');
  await writeFile(sb.path('src/sub/b.txt'), 'hello b '.repeat(10000));
  await push({ store: sb.store, hasher: sb.hasher, project: 'p', app: 'good', version: '1', dir: sb.path('src'), stateDir: sb.stateDir });
});
afterAll(async () => sb.cleanup());

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(KkError);
    return (err as KkError).code;
  }
  return 'no error';
}

/** Write a manifest straight into the store, bypassing validation, as a hostile writer could. */
async function plantManifest(app: string, path: string): Promise<void> {
  const d = await sb.store.getManifest((await sb.store.getRef('p', 'good', '1'))!.manifest);
  const evil = JSON.stringify({ ...d, app, files: [{ ...d.files[0], path }] });
  const bytes = Buffer.from(evil);
  const digest = sha256Digest(bytes);
  await sb.store.writer.put(manifestKey(digest), bytes);
  await sb.store.writer.put(`refs/p/${app}/1`, Buffer.from(JSON.stringify({ manifest: digest, created: new Date().toISOString(), by: 'evil' })));
}

describe('bad input', () => {
  it.each([
    ['dotdot', '../x'],
    ['absolute', '/etc/x'],
    ['emptyseg', 'a//b'],
    ['nul', 'a\u0000b'],
  ])('a manifest path like %s is refused with UNSAFE_PATH before any write', async (app, path) => {
    await plantManifest(app, path);
    const storeBefore = await snapshot(sb.storeDir);
    const parent = sb.path(`unsafe-${app}`);
    await mkdir(parent);
    const target = join(parent, 'deploy');
    expect(await codeOf(pull({ store: sb.store, hasher: sb.hasher, project: 'p', app, version: '1', target, stateDir: sb.stateDir }))).toBe('UNSAFE_PATH');
    expect(await readdir(parent)).toEqual([]);
    expect(existsSync(sb.path('x'))).toBe(false);
    expect(await snapshot(sb.storeDir)).toEqual(storeBefore);
  });

  it('refuses a non-empty directory kk never managed unless adoption is requested', async () => {
    const target = sb.path('unmanaged');
    await mkdir(target);
    await writeFile(join(target, 'precious.txt'), 'do not delete\n');
    const opts = { store: sb.store, hasher: sb.hasher, project: 'p', app: 'good', version: '1', target, stateDir: sb.stateDir };
    expect(await codeOf(pull(opts))).toBe('TARGET_NOT_MANAGED');
    expect(await readdir(target)).toEqual(['precious.txt']);
    await pull({ ...opts, adopt: true });
    expect((await readdir(target)).sort()).toEqual(['a.txt', 'sub']);
  });

  it('fails a pull with CHUNK_CORRUPT on a corrupt chunk and leaves the deployed version in place', async () => {
    const target = sb.path('corrupt-target');
    const base = { store: sb.store, hasher: sb.hasher, project: 'p', stateDir: sb.stateDir };
    await pull({ ...base, app: 'good', version: '1', target: sb.path('corrupt-seed') });
    // v1 deployed; v2's new chunk gets corrupted in the store.
    await mkdir(sb.path('src-c'));
    await writeFile(sb.path('src-c/a.txt'), 'first\n');
    await push({ ...base, app: 'corrupt', version: '1', dir: sb.path('src-c') });
    await pull({ ...base, app: 'corrupt', version: '1', target });
    const v1 = await snapshot(target);
    await writeFile(sb.path('src-c/a.txt'), 'second, and this content lives in one chunk\n'.repeat(50));
    const p2 = await push({ ...base, app: 'corrupt', version: '2', dir: sb.path('src-c') });
    const m = await sb.store.getManifest(p2.manifest);
    const digest = m.files[0]!.sha256 as Digest;
    const key = chunkKey(digest);
    const obj = (await sb.store.driver.get(key))!;
    obj[obj.length - 1] ^= 0xff;
    await sb.store.writer.put(key, obj);
    expect(await codeOf(pull({ ...base, app: 'corrupt', version: '2', target }))).toBe('CHUNK_CORRUPT');
    expect(await snapshot(target)).toEqual(v1);
    // A bad compression header too.
    obj[0] = 9;
    await sb.store.writer.put(key, obj);
    expect(await codeOf(pull({ ...base, app: 'corrupt', version: '2', target }))).toBe('CHUNK_CORRUPT');
    expect(await snapshot(target)).toEqual(v1);
  });

  it('refuses to push an existing version with different content (VERSION_EXISTS) and accepts the same content again', async () => {
    const base = { store: sb.store, hasher: sb.hasher, project: 'p', app: 'good', version: '1', stateDir: sb.stateDir };
    const refBefore = await sb.store.getRef('p', 'good', '1');
    expect((await push({ ...base, dir: sb.path('src') })).status).toBe('unchanged');
    await mkdir(sb.path('src-other'));
    await writeFile(sb.path('src-other/other.txt'), 'different\n');
    expect(await codeOf(push({ ...base, dir: sb.path('src-other') }))).toBe('VERSION_EXISTS');
    expect(await sb.store.getRef('p', 'good', '1')).toEqual(refBefore);
  });

  it.each([
    ['project', { project: 'Bad Name' }],
    ['project', { project: '../etc' }],
    ['app', { app: 'a/b' }],
    ['app', { app: '' }],
    ['version', { version: '../1' }],
    ['version', { version: 'v 1' }],
    ['version', { version: '-x' }],
  ])('invalid %s names fail with INVALID_NAME before any I/O', async (_kind, bad) => {
    const storeBefore = await snapshot(sb.storeDir);
    const missingDir = sb.path('does-not-exist');
    const base = { store: sb.store, hasher: sb.hasher, project: 'p', app: 'good', version: '1', stateDir: sb.path('no-state'), ...bad };
    expect(await codeOf(push({ ...base, dir: missingDir }))).toBe('INVALID_NAME');
    expect(await codeOf(pull({ ...base, target: missingDir }))).toBe('INVALID_NAME');
    expect(existsSync(missingDir)).toBe(false);
    expect(existsSync(sb.path('no-state'))).toBe(false);
    expect(await snapshot(sb.storeDir)).toEqual(storeBefore);
    await rm(sb.path('no-state'), { recursive: true, force: true });
  });
});
