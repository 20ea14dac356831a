// Issue 7, acceptance 1 and 4: both chunk encodings, a store mixing them, a corrupt compressed
// payload, and stores written with compression on and off pulling byte-exactly with one code.
import { mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENCODING_BROTLI, ENCODING_RAW, Store, chunkKey, fileChunks, push, pull, type Digest } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { textBytes, writeRandomFile } from '../fixtures/generate.mjs';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

let sb: Sandbox;
let plain: Store;
let packed: Store;
beforeAll(async () => {
  sb = await sandbox();
  plain = await Store.open(createFileDriver({ root: sb.path('store-plain') }), { create: true, compression: { algorithm: 'none', level: 0, minSaving: 0.1 } });
  packed = await Store.open(createFileDriver({ root: sb.path('store-packed') }), { create: true });
  const src = sb.path('src');
  await mkdir(`${src}/js`, { recursive: true });
  for (let i = 0; i < 5; i++) await writeFile(`${src}/js/bundle${i}.js`, textBytes(400_000 + i * 1000, `bundle${i}`));
  writeRandomFile(`${src}/media.bin`, 2_500_000, 'media');
});
afterAll(async () => sb.cleanup());

async function encodings(store: Store, manifest: Digest): Promise<number[]> {
  const m = await store.getManifest(manifest);
  const out: number[] = [];
  for (const f of m.files) for (const [d] of fileChunks(f)) out.push((await store.driver.get(chunkKey(d), { start: 0, end: 0 }))![0]!);
  return out;
}

describe('chunk compression', () => {
  it('stores raw with compression off, mixes brotli and raw with it on, and both pull byte-exactly', async () => {
    const base = { hasher: sb.hasher, project: 'cmp', app: 'web', version: '1', dir: sb.path('src'), stateDir: sb.stateDir, statCache: false as const };
    const a = await push({ ...base, store: plain });
    const b = await push({ ...base, store: packed });
    expect(plain.config.compression.algorithm).toBe('none');
    expect(packed.config.compression.algorithm).toBe('brotli');
    expect(new Set(await encodings(plain, a.manifest))).toEqual(new Set([ENCODING_RAW]));
    expect(new Set(await encodings(packed, b.manifest))).toEqual(new Set([ENCODING_RAW, ENCODING_BROTLI]));
    // Logical bytes are the same; bytes moved shrink only where compression pays.
    expect(b.bytesUploaded).toBe(a.bytesUploaded);
    expect(b.bytesUploadedStored).toBeLessThan(a.bytesUploadedStored * 0.8);
    expect(a.manifest).not.toBe(undefined);

    const want = await snapshot(sb.path('src'));
    for (const [name, store] of [['plain', plain], ['packed', packed]] as const) {
      const target = sb.path(`deploy-${name}`);
      const r = await pull({ store, hasher: sb.hasher, project: 'cmp', app: 'web', version: '1', target, stateDir: sb.stateDir });
      expect(await snapshot(target)).toEqual(want);
      expect(r.bytesFetchedRaw).toBe(a.bytes);
      if (name === 'packed') expect(r.bytesFetched).toBeLessThan(r.bytesFetchedRaw * 0.8);
      else expect(r.bytesFetched).toBe(r.bytesFetchedRaw + r.chunksFetched);
    }
  });

  it('reads a store in which the same version mixes encodings chunk by chunk', async () => {
    const ref = (await packed.getRef('cmp', 'web', '1'))!;
    const m = await packed.getManifest(ref.manifest);
    // Replace every other brotli object with the raw object of the same chunk from the plain store.
    let swapped = 0;
    for (const f of m.files) {
      for (const [i, [d]] of fileChunks(f).entries()) {
        const key = chunkKey(d);
        if (i % 2 === 0 && (await packed.driver.get(key))![0] === ENCODING_BROTLI) {
          await packed.writer.put(key, (await plain.driver.get(key))!);
          swapped++;
        }
      }
    }
    expect(swapped).toBeGreaterThan(0);
    const target = sb.path('deploy-mixed');
    await pull({ store: packed, hasher: sb.hasher, project: 'cmp', app: 'web', version: '1', target, stateDir: sb.stateDir });
    expect(await snapshot(target)).toEqual(await snapshot(sb.path('src')));
  });

  it('fails with CHUNK_CORRUPT on a corrupt compressed payload and applies nothing', async () => {
    const src = sb.path('src-v2');
    await mkdir(src);
    await writeFile(`${src}/app.js`, textBytes(300_000, 'corrupt-v2'));
    const p = await push({ store: packed, hasher: sb.hasher, project: 'cmp', app: 'web', version: '2', dir: src, stateDir: sb.stateDir, statCache: false });
    const [d] = fileChunks((await packed.getManifest(p.manifest)).files[0]!)[0]!;
    const key = chunkKey(d);
    const obj = (await packed.driver.get(key))!;
    expect(obj[0]).toBe(ENCODING_BROTLI);
    obj[Math.floor(obj.length / 2)]! ^= 0x40;
    await packed.writer.put(key, obj);
    const target = sb.path('deploy-packed');
    const before = await snapshot(target);
    await expect(pull({ store: packed, hasher: sb.hasher, project: 'cmp', app: 'web', version: '2', target, stateDir: sb.stateDir })).rejects.toMatchObject({ code: 'CHUNK_CORRUPT' });
    expect(await snapshot(target)).toEqual(before);
  });
});
