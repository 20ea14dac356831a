// Frames (issue 15 "Compression across small files", packages/core/PACKS.md "Frames"): small
// compressible chunks of a push are concatenated raw and compressed together inside the pack;
// the chunk map (format 2) says where each lives inside its frame. Pull reads a frame once and
// decodes it once for all its members; a second version's reused chunks keep pointing at the old
// frames; a corrupt byte in a frame is CHUNK_CORRUPT naming a chunk of it with nothing applied;
// fsck names the chunks, repair and a re-push restore them; gc --repack moves frames whole.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { brotliDecompressSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ChunkMapEntry,
  DEFAULT_PACK_POLICY,
  type KkError,
  Store,
  chunkMapKey,
  decodeChunkMap,
  encodeChunkMap,
  fsck,
  gc,
  packKey,
  pull,
  push,
} from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

// Frames of ~64 KiB raw, so a few hundred KiB of source make several.
const POLICY = { ...DEFAULT_PACK_POLICY, target: 64 * 1024, frames: { below: 16 * 1024, target: 64 * 1024 } };
let sb: Sandbox;
let store: Store;
beforeAll(async () => {
  sb = await sandbox();
  store = await Store.open(createFileDriver({ root: sb.path('store-f') }), { create: true, packs: POLICY });
});
afterAll(async () => sb.cleanup());

/** Source-like text: similar across files (what frames win on), unique per file. */
function js(i: number, seed: number): Buffer {
  const lines = [`// module ${i} (build ${seed})`];
  for (let k = 0; k < 40 + (i % 50); k++) lines.push(`export function f${i}_${k}(a, b) { return a * ${k} + b - ${i}; }`);
  return Buffer.from(lines.join('\n') + '\n');
}

async function tree(dir: string, seed: number): Promise<void> {
  await mkdir(join(dir, 'lib'), { recursive: true });
  for (let i = 0; i < 150; i++) await writeFile(join(dir, 'lib', `m${i}.js`), js(i, seed));
  // Small random files stay chunk objects of their own (a frame of them would not shrink).
  for (let i = 0; i < 8; i++) await writeFile(join(dir, 'lib', `r${i}.bin`), randomBytes(3000 + i));
  // Chunks of 16 KiB and more are packed alone (compressed alone as before).
  await writeFile(join(dir, 'big.js'), Buffer.concat(Array.from({ length: 60 }, (_, i) => js(1000 + i, seed))));
}

function sha(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

async function packBytes(d: string): Promise<Buffer> {
  return readFile(join(sb.path('store-f'), ...packKey(d as `sha256:${string}`).split('/')));
}

async function mapOf(version: string) {
  const ref = (await store.getRef('p', 'a', version))!;
  const bytes = (await store.driver.get(chunkMapKey(ref.chunkMap!)))!;
  return { bytes, map: decodeChunkMap(bytes, ref.chunkMap) };
}

function byFrame(entries: Iterable<ChunkMapEntry>): Map<string, ChunkMapEntry[]> {
  const out = new Map<string, ChunkMapEntry[]>();
  for (const e of entries) if (e.inner !== undefined) out.set(`${e.pack}@${e.offset}`, [...(out.get(`${e.pack}@${e.offset}`) ?? []), e]);
  return out;
}

describe('frames', () => {
  it('the chunk map codec writes format 1 without frames and format 2 with them; both read back', () => {
    const d = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}` as const;
    const plain = [{ digest: d(2), pack: d(9), offset: 0, length: 10, size: 9 }];
    const v1 = encodeChunkMap(plain);
    expect(v1.bytes[4]).toBe(1);
    expect(v1.bytes.length).toBe(16 + 32 + 48);
    const v2 = encodeChunkMap([...plain, { digest: d(1), pack: d(9), offset: 10, length: 50, size: 300, inner: 1200 }]);
    expect(v2.bytes[4]).toBe(2);
    expect(v2.bytes.length).toBe(16 + 32 + 2 * 52);
    const back = decodeChunkMap(v2.bytes, v2.digest);
    expect(back.format).toBe(2);
    expect(back.find(d(1))).toEqual({ digest: d(1), pack: d(9), offset: 10, length: 50, size: 300, inner: 1200 });
    expect(back.find(d(2))).toEqual(plain[0]);
    expect(decodeChunkMap(v1.bytes).find(d(2))).toEqual(plain[0]);
  });

  it('packs small compressible chunks into frames that decode alone to exactly their members, and pulls byte-exactly', async () => {
    const src = sb.path('v1');
    await tree(src, 1);
    const r = await push({ store, hasher: sb.hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false, deltas: false });
    expect(r.packsUploaded).toBeGreaterThan(0);
    const { bytes, map } = await mapOf('1');
    expect(bytes[4]).toBe(2);
    const frames = byFrame(map.entries());
    expect(frames.size).toBeGreaterThan(2);
    let framedRaw = 0;
    let framedStored = 0;
    for (const members of frames.values()) {
      const e0 = members[0]!;
      const pack = await packBytes(e0.pack);
      const object = pack.subarray(e0.offset, e0.offset + e0.length);
      // A frame is one stored object (header byte 1: brotli) decodable on its own.
      expect(object[0]).toBe(1);
      const raw = brotliDecompressSync(object.subarray(1));
      expect(raw.length).toBeLessThanOrEqual(POLICY.frames.target + POLICY.frames.below);
      for (const m of members) {
        expect(m.length).toBe(e0.length);
        expect(m.size).toBeLessThan(POLICY.frames.below);
        expect(sha(raw.subarray(m.inner!, m.inner! + m.size))).toBe(m.digest);
        framedRaw += m.size;
      }
      expect(members.reduce((s, m) => s + m.size, 0)).toBe(raw.length);
      framedStored += e0.length;
    }
    // Similar small files compress far better together than alone.
    expect(framedStored * 5).toBeLessThan(framedRaw);
    // The random files are chunk objects of their own, stored raw (never inflated by a frame).
    const m = await store.getManifest((await store.getRef('p', 'a', '1'))!.manifest);
    for (const f of m.files.filter((f) => f.path.endsWith('.bin'))) {
      const e = map.find(f.sha256)!;
      expect(e.inner).toBeUndefined();
      expect(e.length).toBe(f.size + 1);
      expect((await packBytes(e.pack))[e.offset]).toBe(0);
    }
    const reader = await Store.open(createFileDriver({ root: sb.path('store-f') }));
    await pull({ store: reader, hasher: sb.hasher, project: 'p', app: 'a', version: '1', target: sb.path('t1'), stateDir: sb.path('s1') });
    expect(await snapshot(sb.path('t1'))).toEqual(await snapshot(src));
  });

  it('reading the members of one frame costs one range read, whether asked for together or one by one', async () => {
    const { map } = await mapOf('1');
    const [members] = [...byFrame(map.entries()).values()].filter((l) => l.length > 3);
    const counting = (reads: string[]) => {
      const driver = createFileDriver({ root: sb.path('store-f') });
      const get = driver.get.bind(driver);
      driver.get = (key, range) => {
        if (key.startsWith('packs/')) reads.push(`${key} ${range?.start}-${range?.end}`);
        return get(key, range);
      };
      return driver;
    };
    const together: string[] = [];
    const a = await Store.open(counting(together));
    a.useChunkMap(map.digest);
    const objects = await a.getChunkObjects(members!.map((e) => e.digest));
    expect(together).toHaveLength(1);
    const alone: string[] = [];
    const b = await Store.open(counting(alone));
    b.useChunkMap(map.digest);
    for (const e of members!) {
      const obj = await b.getChunkObject(e.digest);
      expect(obj.equals(objects.get(e.digest)!)).toBe(true);
      const check = await sb.hasher.decodeChunk(obj, e.digest, e.size);
      expect(check.ok).toBe(true);
    }
    expect(alone).toEqual(together);
  });

  it("a second version's reused chunks keep pointing at the first version's frames", async () => {
    const src = sb.path('v1');
    await writeFile(join(src, 'lib', 'm0.js'), js(0, 2));
    const r = await push({ store, hasher: sb.hasher, project: 'p', app: 'a', version: '2', dir: src, statCache: false, deltas: false });
    expect(r.chunksUploaded).toBe(1);
    const v1 = (await mapOf('1')).map;
    const v2 = (await mapOf('2')).map;
    expect(v2.size).toBe(v1.size);
    let same = 0;
    for (const e of v2.entries()) {
      const old = v1.find(e.digest);
      if (old) {
        expect(e).toEqual(old);
        same++;
      }
    }
    expect(same).toBe(v1.size - 1);
  });

  it('a corrupt byte inside a frame is CHUNK_CORRUPT naming a chunk of that frame, nothing applied; fsck names its chunks, repair + re-push restore it', async () => {
    const { map } = await mapOf('1');
    const [members] = [...byFrame(map.entries()).values()];
    const victim = members![0]!;
    const file = join(sb.path('store-f'), ...packKey(victim.pack).split('/'));
    const bytes = await readFile(file);
    bytes[victim.offset + Math.floor(victim.length / 2)] ^= 0x55;
    await writeFile(file, bytes);
    const target = sb.path('t3');
    await rm(target, { recursive: true, force: true });
    await mkdir(target);
    await writeFile(join(target, 'keep.txt'), 'mine');
    const reader = await Store.open(createFileDriver({ root: sb.path('store-f') }));
    const err = (await pull({ store: reader, hasher: sb.hasher, project: 'p', app: 'a', version: '1', target, stateDir: sb.path('s3'), adopt: true }).catch((e: unknown) => e)) as KkError;
    expect(err.code).toBe('CHUNK_CORRUPT');
    const named = members!.map((e) => e.digest).filter((d) => (err.details?.digest ?? err.message).includes(d.slice(7)));
    expect(named).toHaveLength(1);
    expect([...(await snapshot(target)).keys()]).toEqual(['keep.txt']);

    const check = await fsck({ store, hasher: sb.hasher });
    const bad = check.damaged.filter((d) => d.kind === 'pack');
    expect(new Set(bad.map((d) => d.digest))).toEqual(new Set(members!.map((e) => e.digest)));
    expect(new Set(bad.map((d) => d.key))).toEqual(new Set([packKey(victim.pack)]));
    const repaired = await fsck({ store, hasher: sb.hasher, repair: true });
    expect(repaired.quarantined).toBe(1);
    expect((await fsck({ store, hasher: sb.hasher })).damaged).toEqual([]);
    // Version 2's build (the tree in v1/ now) again: the chunks of the quarantined pack come back.
    const again = await push({ store, hasher: sb.hasher, project: 'p', app: 'a', version: '2', dir: sb.path('v1'), statCache: false, deltas: false });
    expect(again.status).toBe('unchanged');
    expect(again.chunksUploaded).toBeGreaterThan(0);
    const fresh = await Store.open(createFileDriver({ root: sb.path('store-f') }));
    await pull({ store: fresh, hasher: sb.hasher, project: 'p', app: 'a', version: '2', target: sb.path('t4'), stateDir: sb.path('s4') });
    expect(await snapshot(sb.path('t4'))).toEqual(await snapshot(sb.path('v1')));
  });

  it('gc --repack moves live frames whole into new packs; the remaining version pulls byte-exactly', async () => {
    const s = await Store.open(createFileDriver({ root: sb.path('store-r') }), { create: true, packs: POLICY });
    const src = sb.path('r1');
    await tree(src, 1);
    await push({ store: s, hasher: sb.hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false, deltas: false });
    // Version 2 keeps a tenth of the files: most of version 1's packs become sparse once it goes.
    const src2 = sb.path('r2');
    await mkdir(join(src2, 'lib'), { recursive: true });
    for (let i = 0; i < 150; i += 10) await writeFile(join(src2, 'lib', `m${i}.js`), js(i, 1));
    await push({ store: s, hasher: sb.hasher, project: 'p', app: 'a', version: '2', dir: src2, statCache: false, deltas: false });
    await s.deleteRef('p', 'a', '1');
    const before = (await s.getRef('p', 'a', '2'))!.chunkMap!;
    const r = await gc({ store: s, graceMs: 0, repack: true });
    expect(r.packsRepacked).toBeGreaterThan(0);
    const after = (await s.getRef('p', 'a', '2'))!.chunkMap!;
    expect(after).not.toBe(before);
    const moved = await s.getChunkMap(after);
    expect(moved.format).toBe(2);
    expect(byFrame(moved.entries()).size).toBeGreaterThan(0);
    await gc({ store: s, graceMs: 0 });
    const reader = await Store.open(createFileDriver({ root: sb.path('store-r') }));
    await pull({ store: reader, hasher: sb.hasher, project: 'p', app: 'a', version: '2', target: sb.path('t5'), stateDir: sb.path('s5') });
    expect(await snapshot(sb.path('t5'))).toEqual(await snapshot(src2));
    expect((await fsck({ store: s, hasher: sb.hasher })).damaged).toEqual([]);
  });
});
