// Issue 7: deltas against the previous version's chunks. A pull that holds the previous version
// fetches a few bytes per changed chunk; a missing or damaged delta falls back to the chunk.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyRetention, deltaKey, gc, push, pull, type Digest } from '@kk/core';
import { textBytes } from '../fixtures/generate.mjs';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

let sb: Sandbox;
const base = () => ({ store: sb.store, hasher: sb.hasher, project: 'dl', app: 'js', stateDir: sb.stateDir, statCache: false as const });

/** v2 of a file: the version string changed in place every 200 KiB, and one line inserted. */
function bump(data: Buffer): Buffer {
  const out = Buffer.from(data);
  for (let at = 1000; at + 5 < out.length; at += 200_000) out.write('5.9.3', at);
  const mid = Math.floor(out.length / 2);
  return Buffer.concat([out.subarray(0, mid), Buffer.from('\n// patched\n'), out.subarray(mid)]);
}

beforeAll(async () => {
  sb = await sandbox();
  await mkdir(sb.path('v1/lib'), { recursive: true });
  await mkdir(sb.path('v2/lib'), { recursive: true });
  const files: [string, Buffer][] = [
    ['lib/compiler.js', textBytes(3_000_000, 'delta-compiler')],
    ['lib/services.js', textBytes(2_000_000, 'delta-services')],
    ['lib/small.js', textBytes(90_000, 'delta-small')],
  ];
  for (const [p, data] of files) {
    await writeFile(sb.path('v1', p), data);
    await writeFile(sb.path('v2', p), bump(data));
  }
  await writeFile(sb.path('v1/README.md'), 'unchanged\n');
  await writeFile(sb.path('v2/README.md'), 'unchanged\n');
});
afterAll(async () => sb.cleanup());

describe('chunk deltas', () => {
  it('stores small deltas for changed chunks and pulls v2 over v1 moving a fraction of the bytes', async () => {
    await push({ ...base(), version: '1', dir: sb.path('v1') });
    const p2 = await push({ ...base(), version: '2', dir: sb.path('v2') });
    expect(p2.deltas).toBeGreaterThan(0);
    const m2 = await sb.store.getManifest(p2.manifest);
    expect(Object.keys(m2.deltas ?? {})).toHaveLength(p2.deltas);

    const target = sb.path('deploy');
    await pull({ ...base(), version: '1', target });
    const r = await pull({ ...base(), version: '2', target });
    expect(await snapshot(target)).toEqual(await snapshot(sb.path('v2')));
    expect(r.chunksFromDeltas).toBe(p2.deltas);
    expect(r.chunksFetched).toBe(0);
    // Whole new chunks would have been bytesUploadedStored; deltas move a small fraction.
    expect(r.bytesFetched).toBeLessThan(p2.bytesUploadedStored / 10);
    console.log(`deltas: ${p2.deltas} changed chunks, ${p2.bytesUploadedStored} B as chunks, ${r.bytesFetched} B moved by the pull`);
  });

  it('falls back to whole chunks when a delta is damaged or its base is not on this machine', async () => {
    const m2 = await sb.store.getManifest((await sb.store.getRef('dl', 'js', '2'))!.manifest);
    const [[target0, base0]] = Object.entries(m2.deltas!) as [Digest, Digest][];
    const key = deltaKey(target0, base0);
    const obj = (await sb.store.driver.get(key))!;
    obj[obj.length - 1]! ^= 0xff;
    await sb.store.writer.put(key, obj);

    const target = sb.path('deploy-fallback');
    await pull({ ...base(), version: '1', target });
    const r = await pull({ ...base(), version: '2', target });
    expect(await snapshot(target)).toEqual(await snapshot(sb.path('v2')));
    expect(r.chunksFetched).toBeGreaterThanOrEqual(1);

    const fresh = sb.path('deploy-fresh');
    const f = await pull({ ...base(), version: '2', target: fresh });
    expect(f.chunksFromDeltas).toBe(0);
    // Buffer.equals, not toEqual: a deep compare of 3 MB byte by byte takes tens of seconds.
    expect((await readFile(`${fresh}/lib/compiler.js`)).equals(await readFile(sb.path('v2/lib/compiler.js')))).toBe(true);
  });

  it('GC keeps deltas while their chunk lives and sweeps them after', async () => {
    const m2 = await sb.store.getManifest((await sb.store.getRef('dl', 'js', '2'))!.manifest);
    const keys = Object.entries(m2.deltas!).map(([t, b]) => deltaKey(t as Digest, b as Digest));
    await applyRetention({ store: sb.store, project: 'dl', app: 'js', keep: 1 });
    const kept = await gc({ store: sb.store, graceMs: 0 });
    expect(kept.deltasDeleted).toBe(0);
    expect((await sb.store.driver.hasMany(keys)).every(Boolean)).toBe(true);
    await sb.store.deleteRef('dl', 'js', '2');
    const swept = await gc({ store: sb.store, graceMs: 0 });
    expect(swept.deltasDeleted).toBe(keys.length);
    expect((await sb.store.driver.hasMany(keys)).some(Boolean)).toBe(false);
  });
});
