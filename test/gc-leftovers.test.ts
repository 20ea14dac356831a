// Issue 10 item 24: a store writer killed mid-write (a server under kill -9) leaves `.tmp-*`
// files beside the chunks and push leases nobody will release. GC removes temp files older than
// its grace period and leases past their expiry, and nothing else.
import { mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gc, push } from '@kk/core';
import { sandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

const HOUR = 3_600_000;

async function filesIn(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort();
}

describe('gc and what interrupted writers left', () => {
  it('removes temp files older than the grace and expired leases; keeps fresh temp files, live leases and every object', async () => {
    const src = sb.path('src');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a.txt'), 'kept by a version');
    const pushed = await push({ store: sb.store, hasher: sb.hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false });
    const chunkDir = join(sb.storeDir, 'chunks', pushed.manifest.slice(7, 9));
    await mkdir(chunkDir, { recursive: true });
    const oldTemp = join(chunkDir, '.tmp-00000000deadbeef');
    const freshTemp = join(chunkDir, '.tmp-00000000cafef00d');
    await writeFile(oldTemp, Buffer.alloc(4096, 1));
    await writeFile(freshTemp, Buffer.alloc(100, 2));
    const twoHoursAgo = new Date(Date.now() - 2 * HOUR);
    await utimes(oldTemp, twoHoursAgo, twoHoursAgo);
    const lease = (expires: number) => Buffer.from(JSON.stringify({ holder: 'x', created: new Date().toISOString(), expires, chunks: [] }));
    await sb.store.writer.put('locks/push/dead', lease(Date.now() - 60_000));
    await sb.store.writer.put('locks/push/live', lease(Date.now() + HOUR));

    const dry = await gc({ store: sb.store, dryRun: true, graceMs: HOUR });
    expect(dry).toMatchObject({ tempFilesDeleted: 1, leasesExpired: 1 });
    expect((await filesIn(chunkDir)).filter((n) => n.startsWith('.tmp-'))).toHaveLength(2);
    expect(await sb.store.driver.get('locks/push/dead')).toBeDefined();

    const before = (await filesIn(sb.storeDir)).filter((n) => !n.includes('.tmp-') && !n.startsWith('locks'));
    const r = await gc({ store: sb.store, graceMs: HOUR });
    expect(r).toMatchObject({ tempFilesDeleted: 1, leasesExpired: 1, chunksDeleted: 0, manifestsDeleted: 0 });
    expect(r.bytesFreed).toBeGreaterThanOrEqual(4096);
    expect((await filesIn(chunkDir)).filter((n) => n.startsWith('.tmp-'))).toEqual(['.tmp-00000000cafef00d']);
    expect(await sb.store.driver.get('locks/push/dead')).toBeUndefined();
    expect(await sb.store.driver.get('locks/push/live')).toBeDefined();
    expect((await filesIn(sb.storeDir)).filter((n) => !n.includes('.tmp-') && !n.startsWith('locks'))).toEqual(before);
  });
});
