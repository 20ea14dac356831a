// Compressed manifests: a new store with a pack policy (what `kk push` creates) keeps each
// manifest as MANIFEST_BROTLI + brotli of its canonical JSON; the digest (the version's identity)
// stays that of the JSON. Older stores keep writing JSON. The kk server over such a store hands
// clients the JSON and takes compressed uploads; a damaged compressed manifest is refused with
// nothing applied.
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DEFAULT_PACK_POLICY, type KkError, MANIFEST_BROTLI, Store, encodeManifest, manifestKey, pull, push } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { createHttpDriver } from '@kk/drivers/http';
import { startServer } from '@kk/server';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

let sb: Sandbox;
let src: string;
beforeAll(async () => {
  sb = await sandbox();
  src = sb.path('src');
  await mkdir(join(src, 'lib', 'deep'), { recursive: true });
  for (let i = 0; i < 400; i++) await writeFile(join(src, 'lib', i % 2 ? 'deep' : '', `module-${i}.js`), `export const m${i} = ${i};\n`);
});
afterAll(async () => sb.cleanup());

const fileOf = (root: string, d: string) => join(root, ...manifestKey(d as `sha256:${string}`).split('/'));

it('a new packed store keeps manifests compressed under the JSON digest; pulls are byte-exact', async () => {
  const root = sb.path('packed');
  const store = await Store.open(createFileDriver({ root }), { create: true, packs: DEFAULT_PACK_POLICY });
  expect(JSON.parse(await readFile(join(root, 'kk-store.json'), 'utf8')).manifests).toBe('brotli');
  const r = await push({ store, hasher: sb.hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false });
  const stored = await readFile(fileOf(root, r.manifest));
  expect(stored[0]).toBe(MANIFEST_BROTLI);
  const json = encodeManifest(await store.getManifest(r.manifest));
  expect(json.digest).toBe(r.manifest);
  expect(stored.length * 3).toBeLessThan(json.bytes.length);
  await pull({ store, hasher: sb.hasher, project: 'p', app: 'a', version: '1', target: sb.path('t1'), stateDir: sb.path('s1') });
  expect(await snapshot(sb.path('t1'), (p) => p.startsWith('.kk'))).toEqual(await snapshot(src));
});

it('a store made without packs (and every older store) keeps writing JSON', async () => {
  const root = sb.path('loose');
  const store = await Store.open(createFileDriver({ root }), { create: true });
  expect(JSON.parse(await readFile(join(root, 'kk-store.json'), 'utf8')).manifests).toBeUndefined();
  const r = await push({ store, hasher: sb.hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false });
  const stored = await readFile(fileOf(root, r.manifest));
  expect(String.fromCharCode(stored[0]!)).toBe('{');
});

it('the kk server over a compressing store serves JSON and stores what clients upload compressed', async () => {
  const root = sb.path('packed');
  const server = await startServer({ store: root, listen: '127.0.0.1:0', adminToken: 'admin-token-manifests', log: false, config: { hasherThreads: 1 } });
  try {
    const remote = await Store.open(createHttpDriver({ url: server.url, token: 'admin-token-manifests' }));
    expect(remote.config.manifests).toBe('brotli');
    const v1 = await remote.getRef('p', 'a', '1');
    const served = await remote.driver.get(manifestKey(v1!.manifest));
    expect(JSON.parse(Buffer.from(served!).toString('utf8')).version).toBe('1');
    await writeFile(join(src, 'lib', 'added.js'), 'export const added = true;\n');
    const r = await push({ store: remote, hasher: sb.hasher, project: 'p', app: 'a', version: '2', dir: src, statCache: false });
    expect((await readFile(fileOf(root, r.manifest)))[0]).toBe(MANIFEST_BROTLI);
    await pull({ store: remote, hasher: sb.hasher, project: 'p', app: 'a', version: '2', target: sb.path('t2'), stateDir: sb.path('s2') });
    expect(await snapshot(sb.path('t2'), (p) => p.startsWith('.kk'))).toEqual(await snapshot(src));
    await remote.close();
  } finally {
    await server.close();
  }
});

it('a damaged compressed manifest is CHUNK_CORRUPT and nothing is applied', async () => {
  const root = sb.path('packed');
  const store = await Store.open(createFileDriver({ root }));
  const ref = await store.getRef('p', 'a', '1');
  const file = fileOf(root, ref!.manifest);
  const bytes = await readFile(file);
  bytes[Math.floor(bytes.length / 2)] ^= 0xff;
  await writeFile(file, bytes);
  const target = sb.path('t3');
  const err = (await pull({ store, hasher: sb.hasher, project: 'p', app: 'a', version: '1', target, stateDir: sb.path('s3') }).catch((e: unknown) => e)) as KkError;
  expect(err.code).toBe('CHUNK_CORRUPT');
  expect(err.message).toContain(ref!.manifest);
  expect(await stat(target).then(() => 'exists', () => 'absent')).toBe('absent');
});
