// Packs (DESIGN 11, packages/core/PACKS.md) on the file store: small chunks of a push land in a
// few packs plus one chunk map named by the ref, pull reads them back byte-exactly with range
// reads, a second version reuses packed chunks without re-uploading them, and a corrupt byte
// inside a pack is CHUNK_CORRUPT naming the chunk with nothing applied.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEFAULT_PACK_POLICY,
  type KkError,
  Store,
  chunkKey,
  createHasher,
  decodeChunkMap,
  chunkMapKey,
  fileChunks,
  fsck,
  packKey,
  pull,
  push,
  type Hasher,
} from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { snapshot, sandbox, type Sandbox } from './helpers.js';

// Chunk objects of their own (format-1 chunk maps); frames are test/packs-frames.test.ts's.
const POLICY = { ...DEFAULT_PACK_POLICY, below: 64 * 1024, target: 64 * 1024, frames: false as const };
let sb: Sandbox;
let store: Store;
let hasher: Hasher;
beforeAll(async () => {
  sb = await sandbox();
  hasher = createHasher({ threads: 2 });
  // A small pack target so a few hundred KiB make several packs; chunks of 64 KiB and more loose.
  store = await Store.open(createFileDriver({ root: sb.path('packed') }), { create: true, packs: POLICY });
});
afterAll(async () => {
  await hasher.close();
  await sb.cleanup();
});

async function tree(dir: string, files: number, seed: number): Promise<void> {
  await mkdir(join(dir, 'lib'), { recursive: true });
  for (let i = 0; i < files; i++) {
    // Half compressible text, half random: both encodings end up inside packs.
    const body = i % 2 ? randomBytes(3000 + i) : Buffer.from(`module ${i} seed ${seed}\n`.repeat(200 + i));
    await writeFile(join(dir, 'lib', `m${i}.js`), body);
  }
  // One file whose chunks (at least 128 KiB each) stay loose.
  await writeFile(join(dir, 'big.bin'), randomBytes(3 * 1024 * 1024));
}

describe('packs', () => {
  it('packs small chunks, leaves large ones loose, names one chunk map in the ref, and pulls byte-exactly', async () => {
    const src = sb.path('v1');
    await tree(src, 120, 1);
    const r = await push({ store, hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false, deltas: false });
    expect(r.packsUploaded).toBeGreaterThan(1);
    const ref = (await store.getRef('p', 'a', '1'))!;
    expect(ref.chunkMap).toMatch(/^sha256:/);
    const map = decodeChunkMap((await store.driver.get(chunkMapKey(ref.chunkMap!)))!, ref.chunkMap);
    expect(map.packs.length).toBe(r.packsUploaded);
    for (const p of map.packs) expect(await store.driver.stat(packKey(p))).toBeDefined();
    const m = await store.getManifest(ref.manifest);
    let loose = 0;
    for (const f of m.files) {
      for (const [d, size] of fileChunks(f)) {
        const inPack = map.find(d);
        const looseObj = await store.driver.stat(chunkKey(d));
        // Every chunk is in exactly one place: a pack when small, loose when large.
        expect(!!inPack !== !!looseObj).toBe(true);
        expect(!!inPack).toBe(size < POLICY.below);
        if (looseObj) loose++;
        if (inPack) expect(inPack.size).toBe(size);
      }
    }
    expect(loose).toBeGreaterThan(0);
    // A fresh Store (another process) finds the packed chunks through the ref it resolves.
    const reader = await Store.open(createFileDriver({ root: sb.path('packed') }));
    await pull({ store: reader, hasher, project: 'p', app: 'a', version: '1', target: sb.path('t1'), stateDir: sb.path('state1') });
    expect(await snapshot(sb.path('t1'))).toEqual(await snapshot(src));
  });

  it('a second version reuses packed chunks of the first (no re-upload) and is self-contained', async () => {
    const src = sb.path('v1');
    await writeFile(join(src, 'lib', 'm0.js'), 'changed\n'.repeat(100));
    const r = await push({ store, hasher, project: 'p', app: 'a', version: '2', dir: src, statCache: false, deltas: false });
    expect(r.chunksUploaded).toBe(1);
    expect(r.chunksReusedFromPacks).toBe(119);
    const v1 = decodeChunkMap((await store.driver.get(chunkMapKey((await store.getRef('p', 'a', '1'))!.chunkMap!)))!);
    const v2 = decodeChunkMap((await store.driver.get(chunkMapKey((await store.getRef('p', 'a', '2'))!.chunkMap!)))!);
    expect(v2.size).toBe(120);
    // The reused entries point at the first version's packs.
    expect(v2.packs.filter((p) => v1.packs.includes(p)).length).toBe(v1.packs.length);
    const reader = await Store.open(createFileDriver({ root: sb.path('packed') }));
    await pull({ store: reader, hasher, project: 'p', app: 'a', version: '2', target: sb.path('t2'), stateDir: sb.path('state2') });
    expect(await snapshot(sb.path('t2'))).toEqual(await snapshot(src));
  });

  it('getChunkObjects coalesces neighbouring chunks of one pack into one range read', async () => {
    const ref = (await store.getRef('p', 'a', '1'))!;
    const map = await store.getChunkMap(ref.chunkMap!);
    const digests = [...map.entries()].map((e) => e.digest);
    const driver = store.driver;
    let reads = 0;
    const counting = Object.create(driver) as typeof driver;
    counting.get = (key, range) => {
      if (key.startsWith('packs/')) reads++;
      return driver.get(key, range);
    };
    const s = await Store.open(counting);
    s.useChunkMap(ref.chunkMap!);
    const objects = await s.getChunkObjects(digests);
    expect(objects.size).toBe(digests.length);
    expect(reads).toBeLessThanOrEqual(map.packs.length);
    for (const e of map.entries()) {
      const check = await hasher.decodeChunk(objects.get(e.digest)!, e.digest, e.size);
      expect(check.ok).toBe(true);
    }
  });

  it('a corrupt byte inside a pack is CHUNK_CORRUPT naming the chunk, and nothing is applied', async () => {
    const ref = (await store.getRef('p', 'a', '1'))!;
    const map = await store.getChunkMap(ref.chunkMap!);
    // A chunk version 2 shares (fsck below restores it through a re-push of version 2).
    const v2 = await store.getChunkMap((await store.getRef('p', 'a', '2'))!.chunkMap!);
    const victim = [...map.entries()].find((e) => e.length > 100 && v2.find(e.digest))!;
    const file = join(sb.path('packed'), ...packKey(victim.pack).split('/'));
    const bytes = await readFile(file);
    bytes[victim.offset + victim.length - 2] ^= 0x55;
    await writeFile(file, bytes);
    const target = sb.path('t3');
    await rm(target, { recursive: true, force: true });
    await mkdir(target);
    await writeFile(join(target, 'keep.txt'), 'mine');
    const reader = await Store.open(createFileDriver({ root: sb.path('packed') }));
    const err = (await pull({ store: reader, hasher, project: 'p', app: 'a', version: '1', target, stateDir: sb.path('state3'), adopt: true }).catch((e: unknown) => e)) as KkError;
    expect(err.code).toBe('CHUNK_CORRUPT');
    expect(err.details?.digest ?? err.message).toContain(victim.digest.slice(7, 20));
    expect([...(await snapshot(target)).keys()]).toEqual(['keep.txt']);
  });

  it('fsck names the damaged chunk inside the pack; --repair quarantines the pack; a re-push restores the chunks and the pull is byte-exact', async () => {
    const check = await fsck({ store, hasher });
    expect(check.packsChecked).toBeGreaterThan(1);
    const bad = check.damaged.filter((d) => d.kind === 'pack');
    expect(bad.length).toBe(1);
    expect(check.affected).toEqual(expect.arrayContaining([{ project: 'p', app: 'a', version: '1' }]));
    const repaired = await fsck({ store, hasher, repair: true });
    expect(repaired.quarantined).toBe(1);
    expect(await store.driver.stat(bad[0]!.key)).toBeUndefined();
    expect((await fsck({ store, hasher })).damaged).toEqual([]);
    expect(check.affected).toEqual(expect.arrayContaining([{ project: 'p', app: 'a', version: '2' }]));
    // Version 2's build is the tree in v1/ now: pushing it again uploads what the pack held.
    const src = sb.path('v1');
    const again = await push({ store, hasher, project: 'p', app: 'a', version: '2', dir: src, statCache: false, deltas: false });
    expect(again.status).toBe('unchanged');
    expect(again.chunksUploaded).toBeGreaterThan(0);
    const reader = await Store.open(createFileDriver({ root: sb.path('packed') }));
    const target = sb.path('t4');
    await pull({ store: reader, hasher, project: 'p', app: 'a', version: '2', target, stateDir: sb.path('state4') });
    expect(await snapshot(target)).toEqual(await snapshot(src));
  });
});
