// Issue 10 item 3, store side: a file store whose file system fills up during a push. The push
// fails with DISK_FULL and a line naming the store, the temp files of the failed writes are
// gone, and nothing half-written is visible (no partial object, no manifest, no ref). Freeing
// space and pushing again succeeds. The store lives on a 2 MiB tmpfs mounted by the test (root
// only: skipped elsewhere, a failure under CI=true).
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KkError, Store, createHasher, gc, isKkError, push, type Hasher } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { createHttpDriver } from '@kk/drivers/http';
import { startServer } from '@kk/server';
import { writeRandomFile } from '../fixtures/generate.mjs';

let root: string;
let mnt: string;
let mounted = false;
let hasher: Hasher;
let why = '';

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'kk-store-full-'));
  mnt = join(root, 'mnt');
  await mkdir(mnt);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt], { stdio: 'pipe' });
    mounted = true;
  } catch (err) {
    why = `cannot mount a tmpfs (${(err as Error).message.split('\n')[0]}): needs root`;
    if (process.env.CI === 'true') throw new Error(`CI: ${why}`);
  }
  hasher = createHasher({ threads: 1 });
});
afterAll(async () => {
  await hasher?.close();
  if (mounted) execFileSync('umount', [mnt]);
  await rm(root, { recursive: true, force: true });
});

async function filesUnder(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(dir.length + 1)).sort();
}

describe('a file store that fills up', () => {
  it('driver: DISK_FULL naming the store, no temp file, no partial object', async (ctx) => {
    if (!mounted) return ctx.skip(why);
    const dir = join(mnt, 'driver');
    const driver = createFileDriver({ root: dir, fsync: false });
    await driver.put('small', Buffer.from('fits'));
    const err = await driver.put('big/object', Buffer.alloc(3 * 1024 * 1024, 7)).catch((e: KkError) => e);
    expect(isKkError(err, 'DISK_FULL')).toBe(true);
    expect((err as KkError).message).toContain(dir);
    expect((err as KkError).hint).toMatch(/free space/);
    expect(await filesUnder(dir)).toEqual(['small']);
    expect(await driver.putIfAbsent('big/other', Buffer.alloc(3 * 1024 * 1024, 8)).catch((e: KkError) => e.code)).toBe('DISK_FULL');
    expect(await filesUnder(dir)).toEqual(['small']);
    await rm(dir, { recursive: true });
  });

  it('push: DISK_FULL, no ref, no manifest, no temp files; then a push that fits succeeds', async (ctx) => {
    if (!mounted) return ctx.skip(why);
    const dir = join(mnt, 'store');
    const store = await Store.open(createFileDriver({ root: dir, fsync: false }), { create: true });
    const src = join(root, 'build');
    await mkdir(src, { recursive: true });
    // Random bytes do not compress: 3 MiB cannot fit in 2 MiB.
    writeRandomFile(join(src, 'big.bin'), 3 * 1024 * 1024, 'full');
    await writeFile(join(src, 'small.txt'), 'small');
    const err = await push({ store, hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false }).catch((e: KkError) => e);
    expect((err as KkError).code).toBe('DISK_FULL');
    const left = await filesUnder(dir);
    expect(left.filter((f) => f.includes('.tmp-'))).toEqual([]);
    expect(left.filter((f) => f.startsWith('refs/') || f.startsWith('manifests/'))).toEqual([]);
    expect(await store.getRef('p', 'a', '1')).toBeUndefined();
    // The failed push's chunks are unreferenced: GC frees them (how much was written before the
    // disk filled depends on the upload concurrency), then a build that fits goes through.
    expect((await gc({ store, graceMs: 0 })).chunksDeleted).toBeGreaterThan(0);
    expect((await filesUnder(dir)).filter((f) => f.startsWith('chunks/'))).toEqual([]);
    writeRandomFile(join(src, 'big.bin'), 512 * 1024, 'fits');
    const ok = await push({ store, hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false });
    expect(ok.status).toBe('created');
  });

  it('through a kk server: the push is told DISK_FULL (507), not a retried BACKEND error', async (ctx) => {
    if (!mounted) return ctx.skip(why);
    await rm(join(mnt, 'store'), { recursive: true, force: true });
    const admin = 'admin-store-full-0123456789';
    const srv = await startServer({ store: join(mnt, 'server'), listen: '127.0.0.1:0', adminToken: admin, log: false, config: { hasherThreads: 1 } });
    try {
      const store = await Store.open(createHttpDriver({ url: srv.url, token: admin, retries: 1 }));
      const src = join(root, 'build-http');
      await mkdir(src, { recursive: true });
      writeRandomFile(join(src, 'big.bin'), 3 * 1024 * 1024, 'http');
      const err = await push({ store, hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false }).catch((e: KkError) => e);
      expect((err as KkError).code).toBe('DISK_FULL');
      expect((err as KkError).message).toMatch(/no space left/);
      expect(await store.getRef('p', 'a', '1')).toBeUndefined();
      await store.driver.close();
      expect((await filesUnder(join(mnt, 'server'))).filter((f) => f.includes('.tmp-'))).toEqual([]);
    } finally {
      await srv.close();
    }
  });
});
