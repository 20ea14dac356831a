// Issue 15 (pull): seeds the stat cache vouches for are copied as merged ranges (a whole moved
// file in one kernel copy) without a second hash; a seed that no longer holds what kk recorded is
// never trusted. Bytes on disk checked every time.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pull, push } from '@kk/core';
import { writeRandomFile } from '../fixtures/generate.mjs';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

const base = (target: string) => ({ store: sb.store, hasher: sb.hasher, project: 'p', app: 'seed', target, stateDir: sb.stateDir });

describe('seeding from files the stat cache vouches for', () => {
  it('a moved multi-chunk file and an edited one come from local bytes, byte-exact', async () => {
    const v1 = sb.path('v1');
    await mkdir(join(v1, 'lib'), { recursive: true });
    writeRandomFile(join(v1, 'lib/big.bin'), 6 * 1024 * 1024 + 5, 'seed-big');
    writeRandomFile(join(v1, 'lib/edit.bin'), 5 * 1024 * 1024 + 3, 'seed-edit');
    await push({ store: sb.store, hasher: sb.hasher, project: 'p', app: 'seed', version: '1', dir: v1, stateDir: sb.stateDir });
    // v2: big.bin moved, edit.bin with 100 bytes changed in the middle.
    const v2 = sb.path('v2');
    await mkdir(join(v2, 'moved'), { recursive: true });
    await mkdir(join(v2, 'lib'), { recursive: true });
    await writeFile(join(v2, 'moved/big.bin'), await readFile(join(v1, 'lib/big.bin')));
    const edit = await readFile(join(v1, 'lib/edit.bin'));
    edit.fill(7, 2_500_000, 2_500_100);
    await writeFile(join(v2, 'lib/edit.bin'), edit);
    await push({ store: sb.store, hasher: sb.hasher, project: 'p', app: 'seed', version: '2', dir: v2, stateDir: sb.stateDir });

    const target = sb.path('deploy');
    await pull({ ...base(target), version: '1' });
    const r = await pull({ ...base(target), version: '2' });
    expect(await snapshot(target)).toEqual(await snapshot(v2));
    // Everything but the edited chunk came from the directory itself.
    expect(r.bytesSeeded).toBeGreaterThanOrEqual(6 * 1024 * 1024 + 5 + 4 * 1024 * 1024);
    expect(r.bytesFetchedRaw).toBeLessThan(2 * 1024 * 1024);
    expect(r.bytesHashed).toBe(0);
  });

  it('a file replaced behind kk (other inode) is not trusted: its bytes are checked, and the pull is still exact', async () => {
    const target = sb.path('deploy-swapped');
    await pull({ ...base(target), version: '1' });
    // Same name, same size, different bytes, new inode: the stat cache no longer vouches for it.
    const p = join(target, 'lib/big.bin');
    const wrong = await readFile(p);
    wrong.fill(1, 0, 1024 * 1024);
    await writeFile(`${p}.new`, wrong);
    await rename(`${p}.new`, p);
    const r = await pull({ ...base(target), version: '2' });
    expect(await snapshot(target)).toEqual(await snapshot(sb.path('v2')));
    expect(r.bytesFetchedRaw).toBeGreaterThan(0);
  });
});
