// Issue 2, acceptance 4: content-defined chunking keeps an edited 256 MiB file's new chunk bytes
// small, both in the store and on the wire, with the rest seeded from the deployed old file.
import { mkdir } from 'node:fs/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { push, pull } from '@kk/core';
import { writeEditedCopy, writeRandomFile } from '../fixtures/generate.mjs';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

const MiB = 1024 * 1024;
let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

it('an edited 256 MiB file adds at most 8 MiB to the store and fetches at most 8 MiB', async () => {
  const size = 256 * MiB;
  await mkdir(sb.path('v1'));
  await mkdir(sb.path('v2'));
  writeRandomFile(sb.path('v1/data.bin'), size, 'dedup-v1');
  writeEditedCopy(
    sb.path('v1/data.bin'),
    sb.path('v2/data.bin'),
    [
      { insertAt: size / 2, bytes: MiB },
      { overwriteAt: size / 8, bytes: 64 * 1024 },
      { overwriteAt: (size * 7) / 8, bytes: 64 * 1024 },
    ],
    'dedup-edits',
  );
  const common = { store: sb.store, hasher: sb.hasher, project: 'big', app: 'blob', stateDir: sb.stateDir, statCache: false as const };
  const p1 = await push({ ...common, version: 'v1', dir: sb.path('v1') });
  expect(p1.bytesUploaded).toBe(size);
  const p2 = await push({ ...common, version: 'v2', dir: sb.path('v2') });
  expect(p2.bytes).toBe(size + MiB);
  expect(p2.bytesUploaded).toBeGreaterThanOrEqual(MiB);
  expect(p2.bytesUploaded).toBeLessThanOrEqual(8 * MiB);

  const target = sb.path('deploy');
  const l1 = await pull({ ...common, version: 'v1', target });
  expect(l1.bytesFetchedRaw).toBe(size);
  const l2 = await pull({ ...common, version: 'v2', target });
  expect(l2.bytesFetchedRaw).toBeLessThanOrEqual(8 * MiB);
  expect(l2.bytesFetchedRaw + l2.bytesSeeded).toBe(size + MiB);
  console.log(`dedup: v2 stored ${(p2.bytesUploaded / MiB).toFixed(2)} MiB new chunk bytes; pull v2 over v1 fetched ${(l2.bytesFetchedRaw / MiB).toFixed(2)} MiB, seeded ${(l2.bytesSeeded / MiB).toFixed(1)} MiB`);
  expect((await snapshot(target)).get('data.bin')).toEqual((await snapshot(sb.path('v2'))).get('data.bin'));
});
