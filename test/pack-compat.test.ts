// Issue 15 acceptance 5: a store written before packs (fixtures/store-v1: loose chunks only, no
// `packs` in kk-store.json, refs without `chunkMap`) pulls byte-exactly with the current code,
// and a push into it keeps it in the old format (no packs, no chunk maps, kk-store.json as it
// was), so older kk releases keep reading it. The committed fixture is copied, never modified.
import { createHash } from 'node:crypto';
import { cp, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store, fsck, gc, pull, push } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { sandbox, type Sandbox } from './helpers.js';

const FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'store-v1');
let sb: Sandbox;
let expected: Record<string, Record<string, string>>;
beforeAll(async () => {
  sb = await sandbox();
  await cp(join(FIXTURE, 'store'), sb.path('old'), { recursive: true });
  expected = JSON.parse(await readFile(join(FIXTURE, 'expected.json'), 'utf8'));
});
afterAll(async () => sb.cleanup());

async function hashes(dir: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) Object.assign(out, await hashes(dir, p));
    else out[p] = createHash('sha256').update(await readFile(join(dir, p))).digest('hex');
  }
  return out;
}

async function keys(root: string): Promise<string[]> {
  return (await readdir(root, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(root.length + 1)).sort();
}

describe('a store from before packs (fixtures/store-v1)', () => {
  it('pulls every version and the channel byte-exactly', async () => {
    const store = await Store.open(createFileDriver({ root: sb.path('old') }));
    expect(store.config.packs).toBeUndefined();
    for (const v of ['1', '2', 'promoted']) {
      const target = sb.path('deploy', v);
      const r = await pull({ store, hasher: sb.hasher, project: 'fixture', app: 'web', version: v, target, stateDir: sb.path('state', v) });
      expect(await hashes(target)).toEqual(expected[r.version]);
    }
  });

  it('a push into it stays in the old format; gc and fsck find everything in order', async () => {
    const before = await readFile(sb.path('old', 'kk-store.json'));
    const store = await Store.open(createFileDriver({ root: sb.path('old') }));
    const src = sb.path('v3');
    await mkdir(join(src, 'lib'), { recursive: true });
    for (let i = 0; i < 30; i++) await writeFile(join(src, 'lib', `m${i}.js`), `export const m${i} = ${i};\n`);
    await writeFile(join(src, 'README'), 'store-v1 fixture, version 3\n');
    const r = await push({ store, hasher: sb.hasher, project: 'fixture', app: 'web', version: '3', dir: src, statCache: false });
    expect(r.packsUploaded).toBe(0);
    expect(r.chunksUploaded).toBe(31);
    const all = await keys(sb.path('old'));
    expect(all.filter((k) => k.startsWith('packs/') || k.startsWith('chunkmaps/'))).toEqual([]);
    expect((await readFile(sb.path('old', 'kk-store.json'))).equals(before)).toBe(true);
    expect(JSON.parse(await readFile(sb.path('old', 'refs', 'fixture', 'web', '3'), 'utf8'))).not.toHaveProperty('chunkMap');
    const g = await gc({ store, graceMs: 0 });
    expect(g).toMatchObject({ versions: 3, chunksDeleted: 0, manifestsDeleted: 0, packsKept: 0 });
    expect((await fsck({ store, hasher: sb.hasher })).damaged).toEqual([]);
    const target = sb.path('deploy-3');
    await pull({ store: await Store.open(createFileDriver({ root: sb.path('old') })), hasher: sb.hasher, project: 'fixture', app: 'web', version: '3', target, stateDir: sb.path('state-3') });
    expect(await hashes(target)).toEqual(await hashes(src));
  });
});
