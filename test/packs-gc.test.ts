// GC with packs (issue 15 acceptance 6): packs are marked from the chunk maps of the remaining
// versions; GC racing pushes that reuse packed chunks never leaves a version with a missing
// chunk (every remaining version pulls byte-exactly); `repack` rewrites sparse packs and the
// next GC removes the old ones.
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_PACK_POLICY, Store, applyRetention, chunkKey, fileChunks, gc, listVersions, packKey, pull, push } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

let sb: Sandbox;
let store: Store;
beforeAll(async () => {
  sb = await sandbox();
  store = await Store.open(createFileDriver({ root: sb.path('packed') }), { create: true, packs: { ...DEFAULT_PACK_POLICY, below: 64 * 1024, target: 64 * 1024 } });
});
afterAll(async () => sb.cleanup());

/** Every chunk of the version is in a pack its chunk map names, or loose. */
async function complete(s: Store, project: string, app: string, version: string): Promise<boolean> {
  const ref = (await s.getRef(project, app, version))!;
  const map = ref.chunkMap ? await s.getChunkMap(ref.chunkMap) : undefined;
  const m = await s.getManifest(ref.manifest);
  for (const f of m.files) {
    for (const [d] of fileChunks(f)) {
      const e = map?.find(d);
      const ok = e ? !!(await s.driver.stat(packKey(e.pack))) : !!(await s.driver.stat(chunkKey(d)));
      if (!ok) return false;
    }
  }
  return true;
}

async function build(dir: string, round: number): Promise<void> {
  await mkdir(join(dir, 'lib'), { recursive: true });
  // 40 files shared with the previous round (reused from its packs), 10 of the round's own.
  for (let i = 0; i < 40; i++) await writeFile(join(dir, 'lib', `s${i}.bin`), Buffer.from(`shared ${round >> 1} ${i} `.repeat(300)));
  for (let i = 0; i < 10; i++) await writeFile(join(dir, 'lib', `o${i}.bin`), randomBytes(4000));
}

describe('gc with packs', () => {
  it('GC racing pushes that reuse packed chunks never leaves a version with a missing chunk', async () => {
    for (let round = 0; round < 12; round++) {
      const dir = sb.path('race', `${round}`);
      await build(dir, round);
      const pushing = push({ store, hasher: sb.hasher, project: 'race', app: 'app', version: `${round}`, dir, statCache: false, deltas: false });
      const collecting = (async () => {
        await new Promise((r) => setTimeout(r, Math.random() * 30));
        if (round > 0) await applyRetention({ store, project: 'race', app: 'app', keep: 2 });
        return gc({ store, graceMs: 0 }).catch((err) => {
          if (err.code !== 'LOCKED') throw err;
        });
      })();
      const [pushed] = await Promise.all([pushing, collecting]);
      expect(await complete(store, 'race', 'app', pushed.version)).toBe(true);
    }
    await gc({ store, graceMs: 0 });
    const remaining = await listVersions(store, 'race', 'app');
    expect(remaining.length).toBeGreaterThanOrEqual(2);
    for (const v of remaining) {
      const target = sb.path('deploy', v.version);
      await pull({ store, hasher: sb.hasher, project: 'race', app: 'app', version: v.version, target, stateDir: sb.path('state', v.version) });
      expect(await snapshot(target)).toEqual(await snapshot(sb.path('race', v.version)));
    }
  });

  it('repack rewrites sparse packs; the next GC deletes the old ones; versions still pull byte-exactly', async () => {
    const [latest] = await listVersions(store, 'race', 'app');
    await applyRetention({ store, project: 'race', app: 'app', keep: 1 });
    const before = await gc({ store, graceMs: 0 });
    expect(before.packsKept).toBeGreaterThan(0);
    const oldMap = (await store.getRef('race', 'app', latest!.version))!.chunkMap!;
    const r = await gc({ store, graceMs: 0, repack: 0.9 });
    expect(r.packsRepacked).toBeGreaterThan(0);
    expect(r.versionsRemapped).toBe(1);
    const ref = (await store.getRef('race', 'app', latest!.version))!;
    expect(ref.chunkMap).not.toBe(oldMap);
    expect(ref.manifest).toBe(latest!.manifest);
    const after = await gc({ store, graceMs: 0 });
    expect(after.packsDeleted).toBeGreaterThanOrEqual(r.packsRepacked);
    expect(after.chunkMapsDeleted).toBeGreaterThanOrEqual(1);
    const reader = await Store.open(createFileDriver({ root: sb.path('packed') }));
    const target = sb.path('deploy-repacked');
    await pull({ store: reader, hasher: sb.hasher, project: 'race', app: 'app', version: latest!.version, target, stateDir: sb.path('state-repacked') });
    expect(await snapshot(target)).toEqual(await snapshot(sb.path('race', latest!.version)));
  });
});
