// Packs across stores (issue 15 acceptance 1 and item 4): a tree of 2,000 small files pushed to
// s3 (a real s3rver) with packs costs at most one PUT per 100 files (counted at the S3 client),
// and a packed store copied file -> http (kk serve) -> s3 -> file pulls byte-exactly at the end.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_PACK_POLICY, Store, copyVersions, createHasher, pull, push, type Hasher } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { createHttpDriver } from '@kk/drivers/http';
import { createS3Driver } from '@kk/drivers/s3';
import { s3rverUnavailable, startS3rver, type S3rverBackend } from '@kk/testkit';
import { startServer, type RunningServer } from '@kk/server';
import { snapshot } from './helpers.js';

const unavailable = s3rverUnavailable();
if (unavailable && process.env.CI) throw new Error(`CI must run the packs s3 tests: ${unavailable}`);
const ADMIN = `admin-${randomBytes(16).toString('hex')}`;
const POLICY = { ...DEFAULT_PACK_POLICY, target: 1024 * 1024 };

describe.skipIf(!!unavailable)(`packs on s3 and through kk serve${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let s3: S3rverBackend;
  let server: RunningServer;
  let hasher: Hasher;
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'kk-packs-copy-'));
    s3 = await startS3rver();
    // kk serve over an empty packed store (the copy fills it).
    await Store.open(createFileDriver({ root: join(root, 'served') }), { create: true, packs: POLICY });
    server = await startServer({ store: join(root, 'served'), listen: '127.0.0.1:0', adminToken: ADMIN, log: false, config: { hasherThreads: 1 } });
    hasher = createHasher({ threads: 2 });
  });
  afterAll(async () => {
    await hasher?.close();
    await server?.close();
    await s3?.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('a 2,000-file tree pushed to s3 makes at most one PUT per 100 files', async () => {
    const src = join(root, 'tree');
    for (let d = 0; d < 20; d++) {
      await mkdir(join(src, `d${d}`), { recursive: true });
      for (let i = 0; i < 100; i++) await writeFile(join(src, `d${d}`, `f${i}.js`), i % 3 ? `export const v${d}_${i} = ${JSON.stringify('x'.repeat(i * 7))};\n` : randomBytes(900 + i));
    }
    const driver = createS3Driver(s3.driverOptions('packed-tree'));
    const puts: string[] = [];
    driver.client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'PutObjectCommand') puts.push((args.input as { Key: string }).Key);
        return next(args);
      },
      { step: 'initialize' },
    );
    const store = await Store.open(driver, { create: true, packs: DEFAULT_PACK_POLICY });
    const r = await push({ store, hasher, project: 'p', app: 'tree', version: '1', dir: src, statCache: false, deltas: false });
    expect(r.files).toBe(2000);
    expect(puts.filter((k) => k.includes('/chunks/'))).toEqual([]);
    expect(puts.length).toBeLessThanOrEqual(r.files / 100);
    const target = join(root, 'tree-pulled');
    const reader = createS3Driver(s3.driverOptions('packed-tree'));
    await pull({ store: await Store.open(reader), hasher, project: 'p', app: 'tree', version: '1', target, stateDir: join(root, 'state-tree') });
    await reader.close();
    expect(await snapshot(target)).toEqual(await snapshot(src));
    await driver.close();
  });

  it('kk copy of a packed store file -> http -> s3 -> file keeps it packed and pulls byte-exactly', async () => {
    const origin = await Store.open(createFileDriver({ root: join(root, 'origin') }), { create: true, packs: POLICY });
    const srcs: string[] = [];
    for (const v of ['1', '2']) {
      const src = join(root, 'copy-src', v);
      await mkdir(join(src, 'lib'), { recursive: true });
      for (let i = 0; i < 50; i++) await writeFile(join(src, 'lib', `m${i}`), i < 40 ? `shared ${i}\n`.repeat(100) : randomBytes(5000));
      await writeFile(join(src, 'big.bin'), randomBytes(1536 * 1024));
      await push({ store: origin, hasher, project: 'p', app: 'copy', version: v, dir: src, statCache: false, deltas: false });
      srcs.push(src);
    }
    const http = await Store.open(createHttpDriver({ url: server.url, token: ADMIN }));
    const s3store = await Store.open(createS3Driver(s3.driverOptions('copied')), { create: true, chunking: origin.config.chunking, packs: origin.config.packs });
    const back = await Store.open(createFileDriver({ root: join(root, 'back') }), { create: true, chunking: origin.config.chunking, packs: origin.config.packs });
    const first = await copyVersions({ from: origin, to: http, hasher });
    expect(first.packsCopied).toBeGreaterThan(0);
    expect((await copyVersions({ from: http, to: s3store, hasher })).packsCopied).toBe(first.packsCopied);
    expect((await copyVersions({ from: s3store, to: back, hasher })).packsCopied).toBe(first.packsCopied);
    // A second copy sends nothing.
    expect(await copyVersions({ from: s3store, to: back, hasher })).toMatchObject({ versionsUnchanged: 2, chunksCopied: 0 });
    for (const [i, v] of ['1', '2'].entries()) {
      expect((await back.getRef('p', 'copy', v))!.chunkMap).toBeDefined();
      const target = join(root, 'copy-pulled', v);
      await pull({ store: await Store.open(createFileDriver({ root: join(root, 'back') })), hasher, project: 'p', app: 'copy', version: v, target, stateDir: join(root, 'state-copy', v) });
      expect(await snapshot(target)).toEqual(await snapshot(srcs[i]!));
    }
    await http.close();
    await s3store.close();
  });
});
