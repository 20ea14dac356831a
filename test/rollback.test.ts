// Issue 2, acceptance 7: rollback restores the previous version from local state alone.
import { mkdir, rename, writeFile, rm } from 'node:fs/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { KkError, push, pull, rollback, targetStatus, type Store } from '@kk/core';
import { writeRandomFile } from '../fixtures/generate.mjs';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

it('rolls back v2 -> v1 exactly while the store is unreachable, and refuses when there is nothing earlier', async () => {
  const src = sb.path('src');
  await mkdir(`${src}/lib`, { recursive: true });
  await writeFile(`${src}/app.js`, 'console.log("v1")\n');
  await writeFile(`${src}/removed-in-v2.txt`, 'only in v1\n');
  writeRandomFile(`${src}/lib/data.bin`, 3_000_000, 'rb-v1');
  const base = { store: sb.store, hasher: sb.hasher, project: 'roll', app: 'web', stateDir: sb.stateDir };
  await push({ ...base, version: '1', dir: src });
  const v1 = await snapshot(src);
  await writeFile(`${src}/app.js`, 'console.log("v2")\n');
  await rm(`${src}/removed-in-v2.txt`);
  writeRandomFile(`${src}/lib/data.bin`, 3_100_000, 'rb-v2');
  await push({ ...base, version: '2', dir: src });
  const v2 = await snapshot(src);

  const target = sb.path('deploy');
  await mkdir(`${target}/logs`, { recursive: true });
  await writeFile(`${target}/logs/app.log`, 'runtime\n');
  const first = await pull({ ...base, version: '1', target, adopt: true, ignore: ['logs/'] });
  await expect(rollback({ hasher: sb.hasher, target, stateDir: sb.stateDir })).rejects.toMatchObject({ code: 'NOTHING_TO_ROLLBACK' });
  expect(first.version).toBe('1');
  await pull({ ...base, version: '2', target, ignore: ['logs/'] });
  const isLog = (p: string) => p.startsWith('logs');
  expect(await snapshot(target, isLog)).toEqual(v2);

  // The store goes away: rename its directory, and make opening it fail loudly.
  await rename(sb.storeDir, `${sb.storeDir}.offline`);
  let storeOpened = 0;
  const unreachable = async (): Promise<Store> => {
    storeOpened++;
    throw new KkError('BACKEND', 'store unreachable');
  };
  const r = await rollback({ hasher: sb.hasher, target, stateDir: sb.stateDir, store: unreachable });
  expect(r.version).toBe('1');
  expect(r.bytesFetched).toBe(0);
  expect(storeOpened).toBe(0);
  expect(await snapshot(target, isLog)).toEqual(v1);
  // The ignore rules recorded with the last apply still protect runtime files.
  expect((await snapshot(target)).get('logs/app.log')?.type).toBe('file');
  const status = await targetStatus(target, sb.stateDir);
  expect(status.current?.version).toBe('1');
  expect(status.history.map((h) => h.version)).toEqual(['1', '2', '1']);

  // And forward again (rollback --to 2) is just as local.
  const fwd = await rollback({ hasher: sb.hasher, target, stateDir: sb.stateDir, store: unreachable, to: '2' });
  expect(fwd.bytesFetched).toBe(0);
  expect(await snapshot(target, isLog)).toEqual(v2);
  await rename(`${sb.storeDir}.offline`, sb.storeDir);
});
