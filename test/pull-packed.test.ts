// Pull and rollback against a store that keeps small chunks in packs (issue 15): a rollback whose
// files are no longer on this machine fetches them out of packs, byte-exact.
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_PACK_POLICY, Store, createHasher, pull, push, rollback, type Hasher } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { snapshot } from './helpers.js';

let root: string;
let store: Store;
let hasher: Hasher;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'kk-packed-'));
  store = await Store.open(createFileDriver({ root: join(root, 'store') }), { create: true, packs: DEFAULT_PACK_POLICY });
  hasher = createHasher({ threads: 2 });
});
afterAll(async () => {
  await hasher.close();
  await rm(root, { recursive: true, force: true });
});

describe('a packed store', () => {
  it('pulls v1 and v2, and rolls back to v1 from packs when the local cache is gone', async () => {
    for (const v of ['1', '2']) {
      const dir = join(root, `v${v}`);
      await mkdir(join(dir, 'lib'), { recursive: true });
      for (let i = 0; i < 40; i++) await writeFile(join(dir, 'lib', `m${i}.js`), `export const v = ${v}; // ${i} ${'x'.repeat(i * 50)}\n`);
      await push({ store, hasher, project: 'p', app: 'packed', version: v, dir, stateDir: join(root, 'state') });
    }
    expect((await readdir(join(root, 'store', 'packs'), { recursive: true })).length).toBeGreaterThan(0);
    const target = join(root, 'deploy');
    const opts = { store, hasher, project: 'p', app: 'packed', target, stateDir: join(root, 'state') };
    await pull({ ...opts, version: '1' });
    expect(await snapshot(target)).toEqual(await snapshot(join(root, 'v1')));
    await pull({ ...opts, version: '2' });
    expect(await snapshot(target)).toEqual(await snapshot(join(root, 'v2')));
    const fresh = { ...opts, target: join(root, 'deploy2'), stateDir: join(root, 'state3') };
    await pull({ ...fresh, version: '1' });
    await pull({ ...fresh, version: '2' });
    // The files of v1 kept for offline rollback are gone: they must come out of the packs.
    const t = (await readdir(join(root, 'state3', 'targets')))[0]!;
    await rm(join(root, 'state3', 'targets', t, 'files'), { recursive: true, force: true });
    // A fresh Store, as a new kk process has: it has read no ref, so it knows no chunk map yet.
    const r = await rollback({ ...fresh, store: async () => Store.open(createFileDriver({ root: join(root, 'store') })) });
    expect(r.version).toBe('1');
    expect(r.chunksFetched).toBeGreaterThan(0);
    expect(await snapshot(join(root, 'deploy2'))).toEqual(await snapshot(join(root, 'v1')));
  });
});
