// `kk copy` into a packed destination keeps frames (PACKS.md "Frames"): chunks that live in a
// frame of the source come out of the Store raw, and the copy packs them into frames of the
// destination again instead of storing each as a raw object. The copy is as small as the
// source's packs and pulls byte-exactly.
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DEFAULT_PACK_POLICY, Store, copyVersions, decodeChunkMap, pull, push } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

const POLICY = { ...DEFAULT_PACK_POLICY, target: 256 * 1024, frames: { below: 16 * 1024, target: 64 * 1024 } };
let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

async function bytesUnder(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n += (await stat(join(e.parentPath, e.name))).size;
  return n;
}

it('copies framed chunks into frames of the destination: same size class, byte-exact pull', async () => {
  const src = sb.path('src');
  await mkdir(join(src, 'lib'), { recursive: true });
  for (let i = 0; i < 200; i++) {
    const lines = [`// module ${i}`];
    for (let k = 0; k < 30 + (i % 40); k++) lines.push(`export const v${i}_${k} = (a) => a * ${k} + ${i};`);
    await writeFile(join(src, 'lib', `m${i}.js`), lines.join('\n') + '\n');
  }
  const from = await Store.open(createFileDriver({ root: sb.path('a') }), { create: true, packs: POLICY });
  await push({ store: from, hasher: sb.hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false, deltas: false });
  const to = await Store.open(createFileDriver({ root: sb.path('b') }), { create: true, packs: POLICY });
  const r = await copyVersions({ from, to, hasher: sb.hasher });
  expect(r.versions).toBe(1);
  expect(r.chunksCopied).toBe(200);

  // The destination's version points into frames (chunk map entries with an inner offset).
  const ref = await to.getRef('p', 'a', '1');
  expect(ref?.chunkMap).toBeDefined();
  const map = decodeChunkMap(await to.driver.get(`chunkmaps/${ref!.chunkMap!.slice(7, 9)}/${ref!.chunkMap!.slice(7)}`) as Uint8Array);
  const entries = [...map.entries()];
  expect(entries.length).toBe(200);
  expect(entries.filter((e) => e.inner !== undefined).length).toBe(200);
  // Frames compress these files together: the copy's packs are no larger than the source's
  // (chunk objects stored raw one by one would be several times larger).
  const packsA = await bytesUnder(sb.path('a', 'packs'));
  const packsB = await bytesUnder(sb.path('b', 'packs'));
  expect(packsB).toBeLessThanOrEqual(packsA * 1.1);
  expect(packsB * 3).toBeLessThan(await bytesUnder(src));

  await pull({ store: to, hasher: sb.hasher, project: 'p', app: 'a', version: '1', target: sb.path('t'), stateDir: sb.path('st') });
  expect(await snapshot(sb.path('t'), (p) => p.startsWith('.kk'))).toEqual(await snapshot(src));
});
