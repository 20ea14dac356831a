// Issue 2, acceptance 8: retention per app, GC of unreferenced chunks, and GC racing pushes.
import { mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyRetention, fileChunks, gc, push, pull, verifyTarget, chunkKey } from '@kk/core';
import { textBytes, writeRandomFile } from '../fixtures/generate.mjs';
import { sandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

async function pushVersion(app: string, version: string, seed: string) {
  const dir = sb.path('src', app, version);
  await mkdir(dir, { recursive: true });
  await writeFile(`${dir}/shared.txt`, textBytes(200_000, `shared-${app}`));
  writeRandomFile(`${dir}/own.bin`, 700_000, `${app}-${version}-${seed}`);
  return push({ store: sb.store, hasher: sb.hasher, project: 'ret', app, version, dir, stateDir: sb.stateDir, statCache: false });
}

describe('retention and gc', () => {
  it('keeps the newest N of the pushed app only, then GC frees unreferenced chunks and every kept version still pulls and verifies', async () => {
    for (let i = 1; i <= 5; i++) await pushVersion('api', `${i}`, 'a');
    for (let i = 1; i <= 3; i++) await pushVersion('worker', `${i}`, 'w');
    const gone = await Promise.all(['1', '2'].map(async (v) => sb.store.getManifest((await sb.store.getRef('ret', 'api', v))!.manifest)));

    const r = await applyRetention({ store: sb.store, project: 'ret', app: 'api', keep: 3 });
    expect(r.deleted.sort()).toEqual(['1', '2']);
    expect((await sb.store.listVersions('ret', 'api')).map((v) => v.version)).toEqual(['5', '4', '3']);
    expect((await sb.store.listVersions('ret', 'worker')).map((v) => v.version)).toEqual(['3', '2', '1']);

    const g = await gc({ store: sb.store, graceMs: 0 });
    // The deleted versions' own chunks are gone; the shared text chunk is not.
    const ownChunks = gone.flatMap((m) => m.files.filter((f) => f.path === 'own.bin').flatMap((f) => fileChunks(f).map(([d]) => d)));
    expect(ownChunks.length).toBeGreaterThan(0);
    expect(g.chunksDeleted).toBe(new Set(ownChunks).size);
    expect(g.manifestsDeleted).toBe(2);
    for (const d of ownChunks) expect(await sb.store.driver.stat(chunkKey(d))).toBeUndefined();

    for (const [app, v] of [['api', '3'], ['api', '4'], ['api', '5'], ['worker', '1'], ['worker', '3']] as const) {
      const target = sb.path('deploy', app, v);
      const res = await pull({ store: sb.store, hasher: sb.hasher, project: 'ret', app, version: v, target, stateDir: sb.stateDir });
      const m = await sb.store.getManifest(res.manifest);
      expect((await verifyTarget({ target, manifest: m, hasher: sb.hasher })).problems).toEqual([]);
    }
  });

  it('retention never deletes a version a channel points to', async () => {
    for (let i = 1; i <= 4; i++) await pushVersion('pinned', `${i}`, 'p');
    await sb.store.setChannel('ret', 'pinned', 'promoted', '1');
    const r = await applyRetention({ store: sb.store, project: 'ret', app: 'pinned', keep: 2 });
    expect(r.deleted).toEqual(['2']);
    expect(r.decisions.find((d) => d.version === '1')?.reason).toMatch(/promoted/);
  });

  it('GC running concurrently with pushes that reuse chunks never leaves a pushed version with a missing chunk', async () => {
    // Each round: v(n) shares `shared.txt` and half its data with v(n-1); retention deletes
    // v(n-1) and GC (no grace period) races the push of v(n).
    let prevDir: string | undefined;
    for (let round = 0; round < 25; round++) {
      const dir = sb.path('race', `${round}`);
      await mkdir(dir, { recursive: true });
      await writeFile(`${dir}/shared.txt`, textBytes(100_000, 'race-shared'));
      writeRandomFile(`${dir}/stable.bin`, 600_000, `race-stable-${round >> 2}`);
      writeRandomFile(`${dir}/own.bin`, 300_000, `race-own-${round}`);
      const pushing = push({ store: sb.store, hasher: sb.hasher, project: 'race', app: 'app', version: `${round}`, dir, stateDir: sb.stateDir, statCache: false });
      const collecting = (async () => {
        await new Promise((r) => setTimeout(r, Math.random() * 20));
        if (round > 0) await applyRetention({ store: sb.store, project: 'race', app: 'app', keep: 1 });
        return gc({ store: sb.store, graceMs: 0 }).catch((err) => {
          if (err.code !== 'LOCKED') throw err;
        });
      })();
      const [pushed] = await Promise.all([pushing, collecting]);
      const m = await sb.store.getManifest(pushed.manifest);
      const keys = m.files.flatMap((f) => fileChunks(f).map(([d]) => chunkKey(d)));
      expect((await sb.store.driver.hasMany(keys)).every(Boolean)).toBe(true);
      prevDir = dir;
    }
    expect(prevDir).toBeDefined();
    const target = sb.path('deploy-race');
    const last = await pull({ store: sb.store, hasher: sb.hasher, project: 'race', app: 'app', version: 'latest', target, stateDir: sb.stateDir });
    expect((await verifyTarget({ target, manifest: await sb.store.getManifest(last.manifest), hasher: sb.hasher })).ok).toBe(true);
  });
});
