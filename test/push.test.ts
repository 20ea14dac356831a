// Push: the stat cache skips rehashing unchanged files, and a changed file is always rehashed.
import { mkdir, writeFile, utimes, stat } from 'node:fs/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { diff, listVersions, push } from '@kk/core';
import { sandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

it('rehashes only changed files, even a same-size change with the mtime put back', async () => {
  const src = sb.path('src');
  await mkdir(`${src}/d`, { recursive: true });
  for (let i = 0; i < 20; i++) await writeFile(`${src}/d/f${i}.txt`, `file ${i}\n`);
  const old = new Date(Date.now() - 60_000);
  for (let i = 0; i < 20; i++) await utimes(`${src}/d/f${i}.txt`, old, old);
  // Entries changed within 2 s of being cached are "racily clean" and never trusted (as in git).
  await new Promise((r) => setTimeout(r, 2100));
  const base = { store: sb.store, hasher: sb.hasher, project: 'sc', app: 'a', dir: src, stateDir: sb.stateDir };
  const first = await push({ ...base, version: '1' });
  expect(first.filesHashed).toBe(20);
  const second = await push({ ...base, version: '2' });
  expect(second.filesCached).toBe(20);
  expect(second.filesHashed).toBe(0);
  expect(second.chunksUploaded).toBe(0);
  // Same size, mtime restored: the inode change time still gives it away.
  const st = await stat(`${src}/d/f3.txt`);
  await writeFile(`${src}/d/f3.txt`, 'FILE 3\n');
  await utimes(`${src}/d/f3.txt`, st.atime, st.mtime);
  const third = await push({ ...base, version: '3' });
  expect(third.filesHashed).toBe(1);
  expect(third.chunksUploaded).toBe(1);
  expect((await listVersions(sb.store, 'sc', 'a')).map((v) => v.version)).toEqual(['3', '2', '1']);
  const plan = await diff({ store: sb.store, hasher: sb.hasher, project: 'sc', app: 'a', version: '3', target: sb.path('nowhere'), stateDir: sb.stateDir });
  expect(plan.plan.filesAdded).toBe(20);
});
