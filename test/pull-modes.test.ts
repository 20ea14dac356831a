// Issue 12 (pull side): a local pause every pull honours, on_local_change: fail, the sync modes of
// seed 004 (full, skip-existing, events) and the depth limit. Every case checks bytes on disk.
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KkError, pauseLocal, pull, push, readLocalPause, resumeLocal, targetStatus, verifyTarget, IN_TARGET_STAGING } from '@kk/core';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
  const v1 = sb.path('v1');
  await tree(v1, { 'a.txt': 'a1\n', 'b.txt': 'b1\n', 'conf/app.yml': 'port: 1\n', 'lib/x.js': 'x1\n', 'lib/y.js': 'y1\n' });
  const v2 = sb.path('v2');
  await tree(v2, { 'a.txt': 'a2\n', 'b.txt': 'b1\n', 'conf/app.yml': 'port: 2\n', 'lib/x.js': 'x2\n', 'new.txt': 'new\n' });
  for (const [version, dir] of [['1', v1], ['2', v2]] as const) {
    await push({ store: sb.store, hasher: sb.hasher, project: 'p', app: 'a', version, dir, stateDir: sb.stateDir });
  }
});
afterAll(async () => sb.cleanup());

async function tree(dir: string, files: Record<string, string>) {
  for (const [p, body] of Object.entries(files)) {
    await mkdir(join(dir, p, '..'), { recursive: true });
    await writeFile(join(dir, p), body);
  }
}

const base = (target: string, extra: Record<string, unknown> = {}) => ({
  store: sb.store,
  hasher: sb.hasher,
  project: 'p',
  app: 'a',
  target,
  stateDir: sb.stateDir,
  ...extra,
});

async function files(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [p, e] of await snapshot(dir, (p) => p === IN_TARGET_STAGING)) if (e.type === 'file') out[p] = await readFile(join(dir, p), 'utf8');
  return out;
}

const V1 = { 'a.txt': 'a1\n', 'b.txt': 'b1\n', 'conf/app.yml': 'port: 1\n', 'lib/x.js': 'x1\n', 'lib/y.js': 'y1\n' };
const V2 = { 'a.txt': 'a2\n', 'b.txt': 'b1\n', 'conf/app.yml': 'port: 2\n', 'lib/x.js': 'x2\n', 'new.txt': 'new\n' };

describe('local pause (kk pause --path)', () => {
  it('refuses every pull into the directory, whatever state dir it uses, naming who, when and why; resume lifts it', async () => {
    const target = sb.path('paused');
    await pull(base(target, { version: '1' }));
    const p = await pauseLocal({ target, reason: 'upgrading node 2', by: 'ops@host1' });
    expect(p.by).toBe('ops@host1');
    const err = (await pull(base(target, { version: '2' })).catch((e) => e)) as KkError;
    expect(err.code).toBe('PAUSED');
    expect(err.message).toContain('paused by ops@host1 since ');
    expect(err.message).toContain('upgrading node 2');
    // Another state dir (an agent's) sees the same pause.
    const other = (await pull(base(target, { version: '2', stateDir: sb.path('agent-state') , adopt: true })).catch((e) => e)) as KkError;
    expect(other.code).toBe('PAUSED');
    expect(await files(target)).toEqual(V1);
    expect((await targetStatus(target, sb.stateDir)).paused?.reason).toBe('upgrading node 2');
    // The record is invisible to verify, and a dry run still plans.
    const m = await sb.store.getManifest((await sb.store.resolveVersion('p', 'a', '1')).manifest);
    expect((await verifyTarget({ target, manifest: m, hasher: sb.hasher })).ok).toBe(true);
    expect((await pull(base(target, { version: '2', dryRun: true }))).plan.filesChanged).toBe(3);

    expect((await resumeLocal({ target }))?.reason).toBe('upgrading node 2');
    expect(await readLocalPause(target)).toBeUndefined();
    expect(existsSync(join(target, IN_TARGET_STAGING))).toBe(false);
    await pull(base(target, { version: '2' }));
    expect(await files(target)).toEqual(V2);
    expect(await resumeLocal({ target })).toBeUndefined();
  });

  it('a directory paused before its first deploy stays untouched', async () => {
    const target = sb.path('paused-new');
    await pauseLocal({ target, reason: 'not yet' });
    expect(((await pull(base(target, { version: '1' })).catch((e) => e)) as KkError).code).toBe('PAUSED');
    expect(await files(target)).toEqual({});
  });
});

describe('on_local_change: fail', () => {
  it('names the changed files and applies nothing; overwrite (the default) applies', async () => {
    const target = sb.path('local-change');
    await pull(base(target, { version: '1' }));
    await writeFile(join(target, 'conf/app.yml'), 'port: 9999 # hand edit\n');
    await writeFile(join(target, 'lib/stray.log'), 'written by the app\n');
    const err = (await pull(base(target, { version: '2', onLocalChange: 'fail' })).catch((e) => e)) as KkError;
    expect(err.code).toBe('TARGET_CONFLICT');
    expect(err.message).toContain('conf/app.yml (modified)');
    expect(err.message).toContain('lib/stray.log (not written by kk)');
    expect(err.details?.localChanges).toEqual([
      { path: 'conf/app.yml', change: 'modified' },
      { path: 'lib/stray.log', change: 'added' },
    ]);
    expect(await files(target)).toEqual({ ...V1, 'conf/app.yml': 'port: 9999 # hand edit\n', 'lib/stray.log': 'written by the app\n' });
    // The dry run lists them without failing.
    expect((await pull(base(target, { version: '2', onLocalChange: 'fail', dryRun: true }))).localChanges.map((c) => c.path)).toEqual(['conf/app.yml', 'lib/stray.log']);
    await pull(base(target, { version: '2' }));
    expect(await files(target)).toEqual(V2);
  });

  it('a local change the version agrees with, or a touched but unchanged file, is no conflict', async () => {
    const target = sb.path('local-same');
    await pull(base(target, { version: '1' }));
    await writeFile(join(target, 'a.txt'), 'a2\n'); // what v2 holds anyway
    await writeFile(join(target, 'b.txt'), 'b1\n'); // rewritten with the same bytes (new mtime)
    const r = await pull(base(target, { version: '2', onLocalChange: 'fail' }));
    expect(r.localChanges).toEqual([]);
    expect(await files(target)).toEqual(V2);
  });
});

describe('sync modes (seed 004)', () => {
  it('skip-existing adds what is missing and never compares, re-stamps or deletes what is there', async () => {
    const target = sb.path('skip');
    await pull(base(target, { version: '1' }));
    await writeFile(join(target, 'a.txt'), 'local a\n');
    const r = await pull(base(target, { version: '2', mode: 'skip-existing' }));
    expect(r.syncMode).toBe('skip-existing');
    expect(r.bytesHashed).toBe(0);
    expect(r.paths.added).toEqual(['new.txt']);
    expect(r.paths.changed).toEqual([]);
    expect(r.paths.deleted).toEqual([]);
    expect(await files(target)).toEqual({ ...V1, 'a.txt': 'local a\n', 'new.txt': 'new\n' });
    expect((await targetStatus(target, sb.stateDir)).current?.mode).toBe('skip-existing');
    // A full pull afterwards is not misled by what skip-existing left in place.
    await pull(base(target, { version: '2' }));
    expect(await files(target)).toEqual(V2);
  });

  it('events applies only the listed paths (files and directories), deleting listed paths the version lacks', async () => {
    const target = sb.path('events');
    await pull(base(target, { version: '1' }));
    await writeFile(join(target, 'b.txt'), 'untouched local edit\n');
    const r = await pull(base(target, { version: '2', mode: 'events', paths: ['a.txt', 'lib', 'new.txt', 'gone/never.txt'] }));
    expect(r.syncMode).toBe('events');
    expect(r.paths.added.sort()).toEqual(['new.txt']);
    expect(r.paths.changed.sort()).toEqual(['a.txt', 'lib/x.js']);
    expect(r.paths.deleted).toEqual(['lib/y.js']);
    // conf/app.yml and b.txt were not listed: left as they are.
    expect(await files(target)).toEqual({ ...V2, 'b.txt': 'untouched local edit\n', 'conf/app.yml': 'port: 1\n' });
    // The same event again: nothing to do.
    expect((await pull(base(target, { version: '2', mode: 'events', paths: ['a.txt'] }))).upToDate).toBe(true);
    await pull(base(target, { version: '2' }));
    expect(await files(target)).toEqual(V2);
  });

  it('events without paths is refused', async () => {
    const err = (await pull(base(sb.path('events-none'), { version: '1', mode: 'events' })).catch((e) => e)) as KkError;
    expect(err.code).toBe('CONFIG_INVALID');
  });

  it('the depth limit: deeper paths are neither scanned nor written, with a warning', async () => {
    const src = sb.path('deep-src');
    const deep = Array.from({ length: 6 }, (_, i) => `d${i}`).join('/');
    await tree(src, { 'top.txt': 'top\n', [`${deep}/leaf.txt`]: 'leaf\n', 'd0/d1/mid.txt': 'mid\n' });
    await push({ store: sb.store, hasher: sb.hasher, project: 'p', app: 'deep', version: '1', dir: src, stateDir: sb.stateDir });
    const target = sb.path('deep');
    const r = await pull({ ...base(target, { version: '1', maxDepth: 4 }), app: 'deep' });
    expect(r.warnings.join('\n')).toMatch(/deeper than 4 directories and were not applied \(first: d0\/d1\/d2\/d3/);
    expect(await files(target)).toEqual({ 'top.txt': 'top\n', 'd0/d1/mid.txt': 'mid\n' });
    // Content a deeper pull put there is left alone by a shallow one.
    await pull({ ...base(target, { version: '1' }), app: 'deep' });
    await writeFile(join(target, deep, 'local.txt'), 'mine\n');
    const again = await pull({ ...base(target, { version: '1', maxDepth: 4 }), app: 'deep' });
    expect(again.warnings.join('\n')).toMatch(/at depth 4 were not scanned/);
    expect(again.paths.deleted).toEqual([]);
    expect((await readFile(join(target, deep, 'local.txt'), 'utf8'))).toBe('mine\n');
    await rm(join(target, deep, 'local.txt'));
  });
});
