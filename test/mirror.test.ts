// Issue 2, acceptance 2 and 3: round trip through the file store, then an update that changes
// every kind of thing a deploy can change, with ignored target paths left alone.
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { push, pull, renderSha256sum, diffManifests } from '@kk/core';
import { writeRandomFile, textBytes } from '../fixtures/generate.mjs';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

const WEIRD = 'docs/with space/naïve résumé ünï.txt';

async function makeV1(dir: string) {
  await mkdir(join(dir, 'bin'), { recursive: true });
  await writeFile(join(dir, 'bin/app'), '#!/bin/sh\necho app v1\n');
  await chmod(join(dir, 'bin/app'), 0o755);
  await mkdir(join(dir, 'docs/with space'), { recursive: true });
  await writeFile(join(dir, WEIRD), 'weird name\n');
  await writeFile(join(dir, 'empty.txt'), '');
  await mkdir(join(dir, 'var/empty-dir'), { recursive: true });
  await mkdir(join(dir, 'a/b/c/d'), { recursive: true });
  await writeFile(join(dir, 'a/b/c/d/deep.js'), textBytes(300_000, 'deep'));
  writeRandomFile(join(dir, 'lib/big.bin'), 3 * 1024 * 1024 + 17, 'big-v1');
  await mkdir(join(dir, 'config'), { recursive: true });
  await writeFile(join(dir, 'config/app.yml'), 'port: 8080\n');
  await writeFile(join(dir, 'will-be-dir'), 'a file in v1\n');
  await mkdir(join(dir, 'will-be-file'), { recursive: true });
  await writeFile(join(dir, 'will-be-file/inner.txt'), 'inside a dir in v1\n');
  await writeFile(join(dir, 'deleted-in-v2.txt'), 'bye\n');
  await writeFile(join(dir, 'mode-change.sh'), 'echo mode\n');
  await utimes(join(dir, 'config/app.yml'), new Date('2024-01-02T03:04:05.678Z'), new Date('2024-01-02T03:04:05.678Z'));
}

describe('mirror-apply through the file store', () => {
  it('round-trips a tree byte-exactly with modes and mtimes, and sha256sum -c passes inside the target', async () => {
    const src = sb.path('src1');
    await makeV1(src);
    const pushed = await push({ store: sb.store, hasher: sb.hasher, project: 'shop', app: 'api', version: '1.0.0', dir: src, stateDir: sb.stateDir });
    expect(pushed.status).toBe('created');
    expect(pushed.files).toBe(10);
    const target = sb.path('deploy');
    const pulled = await pull({ store: sb.store, hasher: sb.hasher, project: 'shop', app: 'api', version: '1.0.0', target, stateDir: sb.stateDir });
    expect(pulled.plan.filesAdded).toBe(10);
    expect(pulled.bytesFetchedRaw).toBe(pushed.bytes);

    const want = await snapshot(src);
    const got = await snapshot(target);
    expect(got).toEqual(want);
    expect(got.get('bin/app')?.mode).toBe(0o755);
    expect(got.get('var/empty-dir')?.type).toBe('dir');
    // utimes(Date) lands within a millisecond of the intended time (float seconds).
    expect(Math.abs(got.get('config/app.yml')!.mtimeMs! - Date.parse('2024-01-02T03:04:05.678Z'))).toBeLessThanOrEqual(1);

    const sums = sb.path('v1.sha256');
    await writeFile(sums, renderSha256sum(await sb.store.getManifest(pushed.manifest)));
    const out = execFileSync('sha256sum', ['-c', sums], { cwd: target, encoding: 'utf8' });
    expect(out.split('\n').filter((l) => l.endsWith(': OK'))).toHaveLength(10);
  });

  it('updates v1 -> v2 exactly, including file<->directory swaps, and leaves ignored target paths untouched', async () => {
    const src = sb.path('src2');
    await makeV1(src);
    // v2: modified, added, deleted, a mode change, a file that becomes a dir and vice versa.
    await writeFile(join(src, 'bin/app'), '#!/bin/sh\necho app v2\n');
    await mkdir(join(src, 'added'));
    await writeFile(join(src, 'added/new.txt'), 'new in v2\n');
    await rm(join(src, 'deleted-in-v2.txt'));
    await chmod(join(src, 'mode-change.sh'), 0o700);
    await rm(join(src, 'will-be-dir'));
    await mkdir(join(src, 'will-be-dir'));
    await writeFile(join(src, 'will-be-dir/now-inside.txt'), 'dir in v2\n');
    await rm(join(src, 'will-be-file'), { recursive: true });
    await writeFile(join(src, 'will-be-file'), 'a file in v2\n');
    await rm(join(src, 'var/empty-dir'), { recursive: true });
    const v2 = await push({ store: sb.store, hasher: sb.hasher, project: 'shop', app: 'api', version: '2.0.0', dir: src, stateDir: sb.stateDir });

    const target = sb.path('deploy');
    // Runtime files in the deploy directory, covered by the pull's ignore rules.
    await mkdir(join(target, 'logs'), { recursive: true });
    await writeFile(join(target, 'logs/app.log'), 'runtime log\n');
    await writeFile(join(target, 'config/local.override'), 'local\n');
    const ignore = ['logs/', '*.override'];
    const ignoredBefore = await snapshot(target, (p) => !(p.startsWith('logs') || p.endsWith('.override')));

    const opts = { store: sb.store, hasher: sb.hasher, project: 'shop', app: 'api', version: '2.0.0', target, stateDir: sb.stateDir, ignore };
    const before = await snapshot(target);
    const plan = await pull({ ...opts, dryRun: true });
    expect(await snapshot(target)).toEqual(before);
    expect(plan.paths!.deleted.sort()).toEqual(['deleted-in-v2.txt', 'will-be-dir', 'will-be-file/inner.txt']);
    expect(plan.paths!.changed.sort()).toEqual(['bin/app', 'will-be-file']);
    expect(plan.paths!.metaOnly).toContain('mode-change.sh');
    const r = await pull(opts);
    const d = diffManifests(await sb.store.getManifest((await sb.store.getRef('shop', 'api', '1.0.0'))!.manifest), await sb.store.getManifest(v2.manifest));
    expect(d.added.sort()).toEqual(['added/new.txt', 'will-be-dir/now-inside.txt', 'will-be-file']);
    expect(r.plan).toEqual(plan.plan);

    const isIgnored = (p: string) => p === 'logs' || p.startsWith('logs/') || p.endsWith('.override');
    expect(await snapshot(target, isIgnored)).toEqual(await snapshot(src));
    expect(await snapshot(target, (p) => !isIgnored(p))).toEqual(ignoredBefore);

    // Nothing left to do afterwards.
    const again = await pull({ store: sb.store, hasher: sb.hasher, project: 'shop', app: 'api', version: '2.0.0', target, stateDir: sb.stateDir, ignore, dryRun: true });
    expect(again.upToDate).toBe(true);
  });

  it('replaces a symlink in the target instead of writing through it', async () => {
    const src = sb.path('src3');
    await mkdir(join(src, 'conf'), { recursive: true });
    await writeFile(join(src, 'conf/x.txt'), 'x\n');
    await writeFile(join(src, 'top.txt'), 'top\n');
    await push({ store: sb.store, hasher: sb.hasher, project: 'shop', app: 'links', version: '1', dir: src, stateDir: sb.stateDir });
    const outside = sb.path('outside');
    await mkdir(outside);
    await writeFile(join(outside, 'x.txt'), 'precious\n');
    await writeFile(join(outside, 'top-target'), 'precious too\n');
    const target = sb.path('deploy-links');
    await mkdir(target);
    await symlink(outside, join(target, 'conf'));
    await symlink(join(outside, 'top-target'), join(target, 'top.txt'));
    const before = await snapshot(outside);
    await pull({ store: sb.store, hasher: sb.hasher, project: 'shop', app: 'links', version: '1', target, stateDir: sb.stateDir, adopt: true });
    expect(await snapshot(outside)).toEqual(before);
    expect(await snapshot(target)).toEqual(await snapshot(src));
  });
});
