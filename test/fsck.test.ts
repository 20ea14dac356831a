// Issue 10 item 23: a chunk damaged in the store made every pull fail with CHUNK_CORRUPT, and
// the re-push the hint suggested uploaded nothing (the damaged chunk counted as present).
// fsck verifies every stored object, --repair quarantines the damaged ones, and pushing the
// build again then restores them: the next pull is byte-exact.
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FSCK_HINT, QUARANTINE_PREFIX, type KkError, chunkKey, fsck, pull, push, sha256Digest } from '@kk/core';
import { sandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

describe('fsck', () => {
  it('finds a damaged chunk, quarantines it with --repair, and a re-push of the same version restores it', async () => {
    const src = sb.path('build');
    await mkdir(src, { recursive: true });
    const good = Buffer.from('the bytes that must come back\n'.repeat(50));
    await writeFile(join(src, 'app.js'), good);
    await writeFile(join(src, 'other.txt'), 'untouched');
    await push({ store: sb.store, hasher: sb.hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false });
    const digest = sha256Digest(good);
    const file = join(sb.storeDir, ...chunkKey(digest).split('/'));
    const stored = await readFile(file);
    const damaged = Buffer.from(stored);
    damaged[damaged.length - 1] = damaged[damaged.length - 1]! ^ 0xff;
    await writeFile(file, damaged);

    const pulled = await pull({ store: sb.store, hasher: sb.hasher, project: 'p', app: 'a', version: '1', target: sb.path('t1'), stateDir: sb.stateDir }).catch((e: KkError) => e);
    expect((pulled as KkError).code).toBe('CHUNK_CORRUPT');
    // The hint names the way out that works.
    expect((pulled as KkError).hint).toBe(FSCK_HINT);

    const check = await fsck({ store: sb.store, hasher: sb.hasher });
    expect(check.chunksChecked).toBeGreaterThanOrEqual(2);
    expect(check.manifestsChecked).toBe(1);
    expect(check.damaged).toEqual([expect.objectContaining({ kind: 'chunk', digest, key: chunkKey(digest) })]);
    expect(check.affected).toEqual([{ project: 'p', app: 'a', version: '1' }]);
    expect(check.quarantined).toBe(0);
    expect((await readFile(file)).equals(damaged)).toBe(true);

    const repaired = await fsck({ store: sb.store, hasher: sb.hasher, repair: true });
    expect(repaired.quarantined).toBe(1);
    expect(repaired.damaged[0]!.quarantined).toBe(`${QUARANTINE_PREFIX}${chunkKey(digest)}`);
    expect(await sb.store.driver.get(chunkKey(digest))).toBeUndefined();
    expect((await sb.store.driver.get(`${QUARANTINE_PREFIX}${chunkKey(digest)}`))!.equals(damaged)).toBe(true);
    expect((await fsck({ store: sb.store, hasher: sb.hasher })).damaged).toEqual([]);

    const again = await push({ store: sb.store, hasher: sb.hasher, project: 'p', app: 'a', version: '1', dir: src, statCache: false });
    expect(again).toMatchObject({ status: 'unchanged', chunksUploaded: 1 });
    expect((await readFile(file)).equals(stored)).toBe(true);
    const ok = await pull({ store: sb.store, hasher: sb.hasher, project: 'p', app: 'a', version: '1', target: sb.path('t2'), stateDir: sb.stateDir });
    expect(ok.version).toBe('1');
    expect((await readFile(sb.path('t2', 'app.js'))).equals(good)).toBe(true);
  });
});
