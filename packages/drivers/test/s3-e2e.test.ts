// Issue 6, acceptance 2 and 4 at the library level: push to S3 and pull from it with no server,
// and copy versions file -> s3 -> file, all against a real s3rver.
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Driver, type Hasher, Store, copyVersions, createHasher, fileChunks, pull, push } from '@kk/core';
import { s3rverUnavailable, startS3rver } from '@kk/testkit';
import type { S3rverBackend } from '@kk/testkit';
import { createFileDriver } from '../src/index.js';
import { createS3Driver } from '../src/s3.js';

const unavailable = s3rverUnavailable();
if (unavailable && process.env.CI) throw new Error(`CI must run the s3 end-to-end tests: ${unavailable}`);

const KiB = 1024;

/** Path -> sha256 and mode of every file under `dir`, plus every directory. */
async function tree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const abs = path.join(e.parentPath, e.name);
    const rel = path.relative(dir, abs).split(path.sep).join('/');
    const mode = ((await stat(abs)).mode & 0o777).toString(8);
    if (e.isDirectory()) out[`${rel}/`] = mode;
    else out[rel] = `${mode} ${createHash('sha256').update(await readFile(abs)).digest('hex')}`;
  }
  return out;
}

/** Every object of a driver under the DESIGN 3 prefixes that copies carry, with its bytes' digest. */
async function objects(driver: Driver, ...prefixes: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const prefix of prefixes) {
    for await (const o of driver.list(prefix)) out[o.key] = createHash('sha256').update((await driver.get(o.key))!).digest('hex');
  }
  return out;
}

/** Keys of the PUT requests a driver sends from now on. */
function recordPuts(driver: ReturnType<typeof createS3Driver>): string[] {
  const keys: string[] = [];
  driver.client.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName === 'PutObjectCommand') keys.push((args.input as { Key: string }).Key);
      return next(args);
    },
    { step: 'initialize' },
  );
  return keys;
}

describe.skipIf(!!unavailable)(`s3 end to end against s3rver${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let s3: S3rverBackend;
  let hasher: Hasher;
  let work: string;
  const open: Driver[] = [];
  /** A new driver (as on another machine) for the store under `prefix`. */
  const s3Driver = (prefix: string) => {
    const d = createS3Driver(s3.driverOptions(prefix));
    open.push(d);
    return d;
  };

  beforeAll(async () => {
    s3 = await startS3rver();
    hasher = createHasher({ threads: 2 });
    work = await mkdtemp(path.join(tmpdir(), 'kk-s3-e2e-'));
  });
  afterAll(async () => {
    for (const d of open) await d.close();
    await hasher?.close();
    await s3?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function buildTree(dir: string, big: Buffer): Promise<void> {
    await mkdir(path.join(dir, 'bin'), { recursive: true });
    await mkdir(path.join(dir, 'static/css'), { recursive: true });
    await mkdir(path.join(dir, 'empty-dir'), { recursive: true });
    await writeFile(path.join(dir, 'bin/app'), randomBytes(40 * KiB));
    await chmod(path.join(dir, 'bin/app'), 0o755);
    await writeFile(path.join(dir, 'static/css/site.css'), 'body { color: #333 }\n'.repeat(500));
    await writeFile(path.join(dir, 'static/empty.txt'), '');
    await writeFile(path.join(dir, 'data.bin'), big);
  }

  it('push to s3 and pull from it with a separate state dir and no server reproduce the tree byte-exactly; v2 writes only its new chunks', async () => {
    const src = path.join(work, 'build');
    const big = randomBytes(1536 * KiB);
    await buildTree(src, big);

    const pusher = s3Driver('push-pull');
    const store = await Store.open(pusher, { create: true, avgChunkSize: 64 * KiB });
    const common = { store, hasher, project: 'shop', app: 'web', dir: src, stateDir: path.join(work, 'push-state'), statCache: false as const };
    const p1 = await push({ ...common, version: 'v1' });
    expect(p1.status).toBe('created');
    expect(p1.chunksUploaded).toBe(p1.chunks);
    expect(p1.chunks).toBeGreaterThan(10);

    // Another machine: its own driver, its own state directory, only the bucket in common.
    const target = path.join(work, 'deploy');
    const pullState = path.join(work, 'pull-state');
    const puller = await Store.open(s3Driver('push-pull'));
    const l1 = await pull({ store: puller, hasher, project: 'shop', app: 'web', version: 'v1', target, stateDir: pullState });
    expect(l1.chunksFetched).toBeGreaterThan(0);
    expect(await tree(target)).toEqual(await tree(src));

    // v2: an edit in the middle of the big file, one file changed, one added.
    big.fill(7, 700 * KiB, 720 * KiB);
    await writeFile(path.join(src, 'data.bin'), big);
    await writeFile(path.join(src, 'static/css/site.css'), 'body { color: #444 }\n'.repeat(500));
    await writeFile(path.join(src, 'static/new.js'), 'console.log("v2")\n');
    const chunksBefore = Object.keys(await objects(pusher, 'chunks/'));
    const puts = recordPuts(pusher);
    const p2 = await push({ ...common, version: 'v2' });

    const m1 = await store.getManifest(p1.manifest);
    const m2 = await store.getManifest(p2.manifest);
    const inV1 = new Set(m1.files.flatMap((f) => fileChunks(f).map(([d]) => d)));
    const newChunks = new Set(m2.files.flatMap((f) => fileChunks(f).map(([d]) => d)).filter((d) => !inV1.has(d)));
    expect(newChunks.size).toBeGreaterThan(0);
    expect(newChunks.size).toBeLessThan(p2.chunks / 2);
    expect(p2.chunksUploaded).toBe(newChunks.size);
    const chunkPuts = puts.filter((k) => k.startsWith('push-pull/chunks/'));
    expect(chunkPuts.sort()).toEqual([...newChunks].map((d) => `push-pull/chunks/${d.slice(7, 9)}/${d.slice(7)}`).sort());
    // Delta hints (small objects against v1's chunks) are the only other writes.
    expect(puts.filter((k) => k.startsWith('push-pull/deltas/'))).toHaveLength(p2.deltas);
    const other = (k: string) => !['chunks/', 'locks/', 'deltas/'].some((p) => k.startsWith(`push-pull/${p}`));
    expect(puts.filter(other).sort()).toEqual([
      `push-pull/manifests/${p2.manifest.slice(7, 9)}/${p2.manifest.slice(7)}`,
      'push-pull/refs/shop/web/v2',
    ]);
    expect(Object.keys(await objects(pusher, 'chunks/')).length).toBe(chunksBefore.length + newChunks.size);

    const l2 = await pull({ store: puller, hasher, project: 'shop', app: 'web', version: 'v2', target, stateDir: pullState });
    expect(l2.chunksFetched).toBeLessThanOrEqual(newChunks.size);
    expect(await tree(target)).toEqual(await tree(src));
    expect(await puller.listVersions('shop', 'web')).toMatchObject([{ version: 'v2' }, { version: 'v1' }]);
  });

  it('copyVersions file -> s3 -> new file store reproduces every version byte-identically; a second copy sends nothing', async () => {
    const source = await Store.open(createFileDriver({ root: path.join(work, 'copy-src') }), { create: true, avgChunkSize: 16 * KiB });
    const trees: Record<string, string> = {};
    const shared = randomBytes(200 * KiB);
    for (const [project, app, version] of [
      ['alpha', 'api', '1.0.0'],
      ['alpha', 'api', '1.1.0+build.7'],
      ['alpha', 'worker', 'r1'],
      ['beta', 'site', '2024-06-01'],
    ] as const) {
      const dir = path.join(work, 'copy-trees', project, app, version);
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, 'shared.bin'), shared);
      await writeFile(path.join(dir, 'own.txt'), `${project}/${app}/${version}\n`.repeat(100));
      await push({ store: source, hasher, project, app, version, dir, statCache: false, stateDir: path.join(work, 'copy-state') });
      trees[`${project}/${app}/${version}`] = dir;
    }

    const s3Side = s3Driver('copied');
    const viaS3 = await Store.open(s3Side, { create: true, chunking: source.config.chunking, compression: source.config.compression });
    const first = await copyVersions({ from: source, to: viaS3, hasher });
    expect(first).toMatchObject({ versions: 4, versionsUnchanged: 0 });
    expect(first.chunksCopied).toBe(Object.keys(await objects(source.driver, 'chunks/')).length);

    const finalDriver = createFileDriver({ root: path.join(work, 'copy-dst') });
    const final = await Store.open(finalDriver, { create: true, chunking: viaS3.config.chunking, compression: viaS3.config.compression });
    await copyVersions({ from: await Store.open(s3Driver('copied')), to: final, hasher });

    // Chunks, manifests and refs arrive with the same keys and the same bytes.
    const layout = ['chunks/', 'manifests/', 'refs/'];
    expect(await objects(finalDriver, ...layout)).toEqual(await objects(source.driver, ...layout));
    for (const [name, dir] of Object.entries(trees)) {
      const [project, app, version] = name.split('/') as [string, string, string];
      const target = path.join(work, 'copy-deploy', name);
      await pull({ store: final, hasher, project, app, version, target, stateDir: path.join(work, 'copy-pull-state') });
      expect(await tree(target), name).toEqual(await tree(dir));
    }

    const puts = recordPuts(s3Side);
    const again = await copyVersions({ from: source, to: viaS3, hasher });
    expect(again).toMatchObject({ versions: 4, versionsUnchanged: 4, chunksCopied: 0, bytesCopied: 0 });
    expect(puts).toEqual([]);
    const againBack = await copyVersions({ from: viaS3, to: final, hasher });
    expect(againBack).toMatchObject({ versions: 4, versionsUnchanged: 4, chunksCopied: 0 });
  });
});
