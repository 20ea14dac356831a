// Issue 10: what broke when kk was used as a new user would and attacked as an attacker would
// (the pull/apply side). Each case asserts bytes on disk, error codes and state, not log lines.
import { execFileSync } from 'node:child_process';
import fs, { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Hasher,
  type Manifest,
  type ProgressEvent,
  KkError,
  TargetState,
  canonicalManifestJson,
  isKkError,
  manifestKey,
  pull,
  push,
  rollback,
  sha256Digest,
  targetStatus,
} from '@kk/core';
import { textBytes, writeRandomFile } from '../fixtures/generate.mjs';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

const CHILD = fileURLToPath(new URL('./pull-child.mjs', import.meta.url));
let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

let n = 0;
const fresh = (name: string) => sb.path(`${name}-${++n}`);
const base = () => ({ store: sb.store, hasher: sb.hasher, stateDir: sb.stateDir });

async function tree(dir: string, files: Record<string, string | Buffer>, dirs: Record<string, number> = {}) {
  await mkdir(dir, { recursive: true });
  for (const [p, data] of Object.entries(files)) {
    await mkdir(join(dir, p, '..'), { recursive: true });
    await writeFile(join(dir, p), data);
  }
  for (const [p, mode] of Object.entries(dirs)) {
    await mkdir(join(dir, p), { recursive: true });
    await chmod(join(dir, p), mode);
  }
}

async function publish(project: string, app: string, version: string, files: Record<string, string | Buffer>, extra: { ignore?: string[]; allowEmpty?: boolean } = {}) {
  const dir = fresh('src');
  await tree(dir, files);
  await push({ ...base(), project, app, version, dir, ...extra });
  return dir;
}

async function failure(p: Promise<unknown>): Promise<KkError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err, 'expected a failure').toBeInstanceOf(KkError);
  return err as KkError;
}

/** Store raw manifest bytes (any spelling) and a ref naming them. */
async function storeRaw(project: string, app: string, version: string, bytes: Buffer) {
  const d = sha256Digest(bytes);
  await sb.store.driver.put!(manifestKey(d), bytes);
  await sb.store.putRef(project, app, version, d);
  return d;
}

async function manifestOf(project: string, app: string, version: string): Promise<Manifest> {
  return sb.store.getManifest((await sb.store.resolveVersion(project, app, version)).manifest);
}

/** Replace sync fs calls for the rest of a callback; counts every call of `names`. */
async function withFs<T>(names: string[], hook: (name: string, count: number, orig: Record<string, (...a: unknown[]) => unknown>) => void, fn: () => Promise<T>): Promise<T> {
  const f = fs as unknown as Record<string, (...a: unknown[]) => unknown>;
  const orig: Record<string, (...a: unknown[]) => unknown> = {};
  let count = 0;
  for (const name of names) {
    orig[name] = f[name]!;
    f[name] = (...a: unknown[]) => {
      hook(name, ++count, orig);
      return orig[name]!(...a);
    };
  }
  syncBuiltinESMExports();
  try {
    return await fn();
  } finally {
    Object.assign(f, orig);
    syncBuiltinESMExports();
  }
}
const MUTATING = ['renameSync', 'unlinkSync', 'mkdirSync', 'rmdirSync'];

describe('item 3: out of space during a pull', () => {
  it('removes what it staged, keeps the target, fails DISK_FULL; a later run cleans leftovers first', async () => {
    const v1 = await publish('full', 'app', '1', { 'a.txt': 'one\n', 'big.bin': textBytes(200_000, 'v1') });
    await publish('full', 'app', '2', { 'a.txt': 'two\n', 'big.bin': textBytes(300_000, 'v2'), 'c.txt': 'new\n' });
    const target = fresh('deploy');
    await pull({ ...base(), project: 'full', app: 'app', version: '1', target });
    let calls = 0;
    const full: Hasher = {
      ...sb.hasher,
      stageFiles: async (files) => {
        if (calls++ > 0) return sb.hasher.stageFiles(files);
        await sb.hasher.stageFiles(files.slice(0, 1));
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      },
    };
    const err = await failure(pull({ ...base(), hasher: full, project: 'full', app: 'app', version: '2', target }));
    expect(err.code).toBe('DISK_FULL');
    expect(err.message).toMatch(/needs [\d.]+ (MiB|GiB) in /);
    expect(await snapshot(target)).toEqual(await snapshot(v1));
    const st = new TargetState(target, sb.stateDir);
    expect(existsSync(st.stagingDir)).toBe(false);
    expect(existsSync(st.journalFile)).toBe(false);

    // Leftovers of a run that was killed while staging (in the state dir, or in the target).
    await mkdir(st.stagingDir, { recursive: true });
    await writeFile(join(st.stagingDir, '0'), textBytes(10_000, 'junk'));
    await mkdir(join(target, '.kk-staging'));
    await writeFile(join(target, '.kk-staging/0'), 'junk');
    const r = await pull({ ...base(), project: 'full', app: 'app', version: '1', target });
    expect(r.upToDate).toBe(true);
    expect(existsSync(st.stagingDir)).toBe(false);
    expect(existsSync(join(target, '.kk-staging'))).toBe(false);
  });

  it('refuses before writing when the file system cannot hold the staged version (real tmpfs)', async (ctx) => {
    if (process.getuid?.() !== 0) return ctx.skip('mounting a small tmpfs needs root');
    const mnt = fresh('tmpfs');
    await mkdir(mnt);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt]);
    } catch {
      if (process.env.CI === 'true') throw new Error('cannot mount tmpfs in CI');
      return ctx.skip('mount -t tmpfs is not permitted here');
    }
    try {
      const src = fresh('src');
      await mkdir(src);
      writeRandomFile(join(src, 'big.bin'), 3 * 1024 * 1024, 'too-big');
      await push({ ...base(), project: 'full', app: 'tmpfs', version: '1', dir: src });
      const target = join(mnt, 'deploy');
      const stateDir = join(mnt, 'state');
      const err = await failure(pull({ ...base(), stateDir, project: 'full', app: 'tmpfs', version: '1', target }));
      expect(err.code).toBe('DISK_FULL');
      expect(err.message).toContain(join(stateDir));
      expect(await readdir(target)).toEqual([]);
      // No staging and no empty state left behind by the failed first pull.
      expect(existsSync(new TargetState(target, stateDir).dir)).toBe(false);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});

describe('item 3 (push side): a store that fills up', () => {
  it('fails DISK_FULL and creates no version (file store on a real 2 MiB tmpfs)', async (ctx) => {
    if (process.getuid?.() !== 0) return ctx.skip('mounting a small tmpfs needs root');
    const mnt = fresh('tmpfs');
    await mkdir(mnt);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt]);
    } catch {
      if (process.env.CI === 'true') throw new Error('cannot mount tmpfs in CI');
      return ctx.skip('mount -t tmpfs is not permitted here');
    }
    try {
      const { Store: S } = await import('@kk/core');
      const { createFileDriver } = await import('@kk/drivers');
      const store = await S.open(createFileDriver({ root: join(mnt, 'store') }), { create: true });
      const src = fresh('src');
      await mkdir(src);
      writeRandomFile(join(src, 'big.bin'), 3 * 1024 * 1024, 'store-full');
      const err = await failure(push({ store, hasher: sb.hasher, stateDir: sb.stateDir, project: 'full', app: 'store', version: '1', dir: src }));
      expect(err.code).toBe('DISK_FULL');
      expect(err.message).toMatch(/space/i);
      expect(await store.getRef('full', 'store', '1')).toBeUndefined();
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});

describe('item 5: the push\'s ignore rules travel with the version', () => {
  it('protects paths the version\'s rules match even when the host has no rules, and diff says which rule', async () => {
    await publish('ign', 'app', '1', { 'index.html': 'v1', 'logs/build.log': 'not published' }, { ignore: ['logs/', '*.pid'] });
    expect((await manifestOf('ign', 'app', '1')).ignore).toEqual(['logs/', '*.pid']);
    expect((await manifestOf('ign', 'app', '1')).files.map((f) => f.path)).toEqual(['index.html']);
    const target = fresh('deploy');
    await pull({ ...base(), project: 'ign', app: 'app', version: '1', target });
    await mkdir(join(target, 'logs'));
    await writeFile(join(target, 'logs/runtime.log'), 'precious');
    await writeFile(join(target, 'app.pid'), '42');
    await publish('ign', 'app', '2', { 'index.html': 'v2' }, { ignore: ['logs/', '*.pid'] });
    const plan = await pull({ ...base(), project: 'ign', app: 'app', version: '2', target, ignore: ['cache/'], dryRun: true });
    expect(plan.paths.deleted).toEqual([]);
    expect(plan.protected.total).toBe(2);
    expect(plan.protected.paths).toEqual(
      expect.arrayContaining([
        { path: 'logs/', rule: 'logs/', from: 'version' },
        { path: 'app.pid', rule: '*.pid', from: 'version' },
      ]),
    );
    expect(plan.protected.rules).toContainEqual({ pattern: 'cache/', from: 'local' });
    await pull({ ...base(), project: 'ign', app: 'app', version: '2', target });
    expect(await readFile(join(target, 'logs/runtime.log'), 'utf8')).toBe('precious');
    expect(await readFile(join(target, 'app.pid'), 'utf8')).toBe('42');
    expect(await readFile(join(target, 'index.html'), 'utf8')).toBe('v2');
  });
});

describe('item 6: another app, an empty version, an empty build', () => {
  it('refuses to pull another app into a managed directory unless forced', async () => {
    await publish('p6', 'one', '1', { 'one.txt': 'one' });
    await publish('p6', 'two', '1', { 'two.txt': 'two' });
    const target = fresh('deploy');
    await pull({ ...base(), project: 'p6', app: 'one', version: '1', target });
    const err = await failure(pull({ ...base(), project: 'p6', app: 'two', version: '1', target }));
    expect(err.code).toBe('TARGET_CONFLICT');
    expect(await readdir(target)).toEqual(['one.txt']);
    await pull({ ...base(), project: 'p6', app: 'two', version: '1', target, force: true });
    expect(await readdir(target)).toEqual(['two.txt']);
  });

  it('refuses to push an empty build unless allowed, and to empty a directory with an empty version unless forced', async () => {
    const empty = fresh('src');
    await mkdir(join(empty, 'only-dirs'), { recursive: true });
    expect((await failure(push({ ...base(), project: 'p6', app: 'e', version: '1', dir: empty }))).code).toBe('SOURCE_INVALID');
    await publish('p6', 'e', '1', { 'x.txt': 'x' });
    await push({ ...base(), project: 'p6', app: 'e', version: '2', dir: empty, allowEmpty: true });
    const target = fresh('deploy');
    await pull({ ...base(), project: 'p6', app: 'e', version: '1', target });
    expect((await failure(pull({ ...base(), project: 'p6', app: 'e', version: '2', target }))).code).toBe('TARGET_CONFLICT');
    expect(await readdir(target)).toEqual(['x.txt']);
    await pull({ ...base(), project: 'p6', app: 'e', version: '2', target, force: true });
    expect(await readdir(target)).toEqual(['only-dirs']);
    // Once empty, the empty version is simply up to date: nothing left to protect.
    expect((await pull({ ...base(), project: 'p6', app: 'e', version: '2', target })).upToDate).toBe(true);
  });
});

describe('item 7: the cache of replaced files has a budget', () => {
  it('holds one earlier version by default after b1 -> b2 -> b1 -> b2, none with a zero cap; status reports it', async () => {
    const files = (tag: string) => Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`f${i}.bin`, textBytes(50_000, `${tag}-${i}`)]));
    await publish('p7', 'app', 'b1', files('b1'));
    await publish('p7', 'app', 'b2', files('b2'));
    const target = fresh('deploy');
    for (const v of ['b1', 'b2', 'b1', 'b2']) await pull({ ...base(), project: 'p7', app: 'app', version: v, target });
    const s = await targetStatus(target, sb.stateDir);
    // Only b1's 8 replaced files, held by the cache alone (b2's are the directory's own).
    expect(s.cache.files).toBe(8);
    expect(s.cache.bytes).toBe(8 * 50_000);
    await pull({ ...base(), project: 'p7', app: 'app', version: 'b1', target, cacheMaxBytes: 0 });
    expect((await targetStatus(target, sb.stateDir)).cache.bytes).toBe(0);
  });
});

describe('item 8: rollback names the app', () => {
  it('accepts project and app, and refuses when the directory holds another app', async () => {
    await publish('p8', 'app', '1', { 'v.txt': '1' });
    await publish('p8', 'app', '2', { 'v.txt': '2' });
    const target = fresh('deploy');
    await pull({ ...base(), project: 'p8', app: 'app', version: '1', target });
    await pull({ ...base(), project: 'p8', app: 'app', version: '2', target });
    expect((await failure(rollback({ ...base(), project: 'p8', app: 'other', target }))).code).toBe('TARGET_CONFLICT');
    expect(await readFile(join(target, 'v.txt'), 'utf8')).toBe('2');
    await rollback({ ...base(), project: 'p8', app: 'app', target });
    expect(await readFile(join(target, 'v.txt'), 'utf8')).toBe('1');
  });
});

describe('items 14 and 18: a target reached through a symlink', () => {
  it('keys state by the real path and refuses when the link now leads to another directory', async () => {
    await publish('p14', 'app', '1', { 'a.txt': 'a' });
    const real = fresh('real');
    const link = fresh('link');
    await mkdir(real);
    await symlink(real, link);
    await pull({ ...base(), project: 'p14', app: 'app', version: '1', target: link });
    // The same directory under its other spelling is the same target.
    const again = await pull({ ...base(), project: 'p14', app: 'app', version: '1', target: real });
    expect(again.upToDate).toBe(true);
    expect(again.target).toBe(fs.realpathSync(real));
    expect((await targetStatus(link, sb.stateDir)).managed).toBe(true);

    const elsewhere = fresh('elsewhere');
    await tree(elsewhere, { 'keep.txt': 'not kk\'s', 'a.txt': 'theirs' });
    await rm(link);
    await symlink(elsewhere, link);
    const err = await failure(pull({ ...base(), project: 'p14', app: 'app', version: '1', target: link, adopt: true }));
    expect(err.code).toBe('TARGET_CONFLICT');
    expect(await readFile(join(elsewhere, 'keep.txt'), 'utf8')).toBe('not kk\'s');
    expect(await readFile(join(elsewhere, 'a.txt'), 'utf8')).toBe('theirs');
  });
});

describe('item 15: progress and failed first pulls', () => {
  it('does not count seeded bytes as fetched, and a failed first pull leaves no state directory', async () => {
    const payload = textBytes(400_000, 'seed-me');
    await publish('p15', 'app', '1', { 'a.bin': payload });
    await publish('p15', 'app', '2', { 'a.bin': payload, 'b.bin': payload, 'small.txt': 'fetched\n' });
    const target = fresh('deploy');
    await pull({ ...base(), project: 'p15', app: 'app', version: '1', target });
    const events: ProgressEvent[] = [];
    const r = await pull({ ...base(), project: 'p15', app: 'app', version: '2', target, onProgress: (e) => events.push(e) });
    expect(r.bytesSeeded).toBe(400_000);
    const last = events.filter((e) => e.phase === 'fetch').at(-1)!;
    expect(last.bytesDone).toBe(r.bytesFetchedRaw);
    expect(last.bytesTotal).toBe(r.bytesFetchedRaw);

    const never = fresh('deploy');
    expect((await failure(pull({ ...base(), project: 'p15', app: 'app', version: 'nope', target: never }))).code).toBe('NOT_FOUND');
    expect(existsSync(new TargetState(never, sb.stateDir).dir)).toBe(false);
  });
});

// v1 -> v2 changes every kind of thing: file<->dir both ways, modes, deletes, a read-only dir.
const V1: Record<string, string> = { 'flip/x': 'x is a file in v1\n', 'd2/inner.txt': 'd2 is a dir in v1\n', 'mode.sh': 'echo\n', 'gone.txt': 'bye\n', 'ro/a.txt': 'ro a v1\n', 'ro/c.txt': 'ro c v1\n', 'sub/s.txt': 's v1\n', 'sub/deep/t.txt': 't v1\n' };
const V2: Record<string, string> = { 'flip/x/inner.txt': 'x is a dir in v2\n', d2: 'd2 is a file in v2\n', 'mode.sh': 'echo\n', 'ro/a.txt': 'ro a v2\n', 'ro/b.txt': 'ro b v2\n', 'sub/s.txt': 's v2\n', 'sub/deep/u.txt': 'u v2\n' };
for (let i = 0; i < 20; i++) {
  V1[`many/f${i}.txt`] = `file ${i} v1\n`;
  V2[`many/f${i}.txt`] = i % 2 ? `file ${i} v1\n` : `file ${i} v2\n`;
}

async function publishChanging(app: string) {
  const d1 = fresh('src');
  const d2 = fresh('src');
  await tree(d1, V1);
  await tree(d2, V2);
  await chmod(join(d2, 'mode.sh'), 0o755);
  await chmod(join(d1, 'ro'), 0o555);
  await chmod(join(d2, 'ro'), 0o555);
  await push({ ...base(), project: 'flip', app, version: '1', dir: d1 });
  await push({ ...base(), project: 'flip', app, version: '2', dir: d2 });
  return { d1, d2, s1: await snapshot(d1), s2: await snapshot(d2) };
}

/** Every file path holds its whole v1 or v2 bytes (or is absent where a version lacks it). */
async function assertWhole(target: string) {
  const paths = new Set([...Object.keys(V1), ...Object.keys(V2)]);
  for (const p of paths) {
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(join(target, p));
    } catch {
      st = undefined; // ENOENT, or ENOTDIR under a path that is a file now
    }
    if (!st || !st.isFile()) {
      expect(V1[p] === undefined || V2[p] === undefined || st?.isDirectory(), `${p} vanished`).toBe(true);
      continue;
    }
    expect([V1[p], V2[p]], `${p} holds neither v1 nor v2`).toContain(await readFile(join(target, p), 'utf8'));
  }
}

describe('item 16: a commit interrupted at any step is finished by the next run', () => {
  it('replays from every point, including a second interruption during the replay, for every kind of change', async () => {
    const { s1, s2 } = await publishChanging('replay');
    const target = fresh('deploy');
    const opts = { ...base(), project: 'flip', app: 'replay', target };
    await pull({ ...opts, version: '1' });
    let steps = 0;
    await withFs(MUTATING, (_n, c) => (steps = c), () => pull({ ...opts, version: '2' }));
    expect(await snapshot(target)).toEqual(s2);
    expect(steps).toBeGreaterThan(20);
    await pull({ ...opts, version: '1' });
    let replays = 0;
    for (let k = 1; k <= steps; k++) {
      const crash = (at: number) => (_n: string, c: number) => {
        if (c === at) throw new Error(`simulated crash at step ${at}`);
      };
      const err = await failure(withFs(MUTATING, crash(k), () => pull({ ...opts, version: '2' })));
      expect(err.code).toBe('TARGET_CONFLICT');
      await assertWhole(target);
      if (k % 2 === 0) {
        // Interrupted again, during the replay.
        await withFs(MUTATING, crash(1 + (k % 7)), () => pull({ ...opts, version: '2' })).catch(() => {});
        await assertWhole(target);
      }
      const r = await pull({ ...opts, version: '2' });
      if (r.recovered) replays++;
      expect(await snapshot(target), `after a crash at step ${k}`).toEqual(s2);
      await pull({ ...opts, version: '1' });
      expect(await snapshot(target)).toEqual(s1);
    }
    expect(replays).toBeGreaterThan(steps / 2);
  });

  it('a replay that cannot finish says why, and --repair converges', async () => {
    const { s2 } = await publishChanging('repair');
    const target = fresh('deploy');
    const opts = { ...base(), project: 'flip', app: 'repair', target };
    await pull({ ...opts, version: '1' });
    await failure(withFs(MUTATING, (_n, c) => {
      if (c === 3) throw new Error('simulated crash');
    }, () => pull({ ...opts, version: '2' })));
    // The staged copies are lost (a cleaned /tmp, a reinstalled state dir).
    const st = new TargetState(target, sb.stateDir);
    await rm(st.stagingDir, { recursive: true, force: true });
    const err = await failure(pull({ ...opts, version: '2' }));
    expect(err.code).toBe('TARGET_CONFLICT');
    expect(err.hint).toContain('--repair');
    await pull({ ...opts, version: '2', repair: true });
    expect(await snapshot(target)).toEqual(s2);
    expect(existsSync(st.journalFile)).toBe(false);
  });
});

describe('item 17: a symlink swapped in during the commit or before the replay reaches nothing outside', () => {
  it('leaves the outside directory byte-identical at every step', async () => {
    const { s2 } = await publishChanging('swap');
    const outside = fresh('outside');
    await tree(outside, { 's.txt': 'outside s\n', 'deep/t.txt': 'outside t\n', 'a.txt': 'outside a\n', 'inner.txt': 'outside inner\n' });
    const want = await snapshot(outside);
    const target = fresh('deploy');
    const opts = { ...base(), project: 'flip', app: 'swap', target };
    let steps = 0;
    await pull({ ...opts, version: '1' });
    await withFs(MUTATING, (_n, c) => (steps = c), () => pull({ ...opts, version: '2' }));
    for (let k = 1; k <= steps; k++) {
      await pull({ ...opts, version: '1', force: true }).catch(() => pull({ ...opts, version: '1', repair: true, force: true }));
      const victim = ['sub', 'ro', 'flip', 'sub/deep', 'many'][k % 5]!;
      await withFs(MUTATING, (_n, c, orig) => {
        if (c !== k) return;
        // The attack: the directory moves away and a symlink to the outside takes its place.
        try {
          orig.renameSync!(join(target, victim), join(target, `${victim.replace('/', '_')}.moved`));
          fs.symlinkSync(outside, join(target, victim));
        } catch {
          /* the victim is not a directory at this step */
        }
      }, () => pull({ ...opts, version: '2' })).catch((e) => expect(isKkError(e)).toBe(true));
      expect(await snapshot(outside), `swap of ${victim} at step ${k}`).toEqual(want);
      // Between a kill and the replay: swap again, then let the next run replay.
      await withFs(MUTATING, (_n, c) => {
        if (c === 2) throw new Error('simulated crash');
      }, () => pull({ ...opts, version: '2' })).catch(() => {});
      if (fs.lstatSync(join(target, 'sub'), { throwIfNoEntry: false })?.isDirectory()) {
        fs.renameSync(join(target, 'sub'), join(target, 'sub.moved2'));
        fs.symlinkSync(outside, join(target, 'sub'));
      }
      await pull({ ...opts, version: '2' }).catch(() => pull({ ...opts, version: '2', repair: true }));
      expect(await snapshot(outside)).toEqual(want);
      expect(await snapshot(target)).toEqual(s2);
    }
  });
});

describe('item 19: manifests that pass validation but cannot be committed', () => {
  it('creates parents a manifest leaves implied, and refuses a path too long for the target before changing anything', async () => {
    const good = await manifestOf('p8', 'app', '1');
    const implied: Manifest = { ...good, version: 'implied', dirs: [{ path: 'a/b/c', mode: 0o750 }], files: [...good.files.map((f) => ({ ...f, path: `x/y/${f.path}` }))] };
    await storeRaw('p8', 'app', 'implied', Buffer.from(canonicalManifestJson(implied)));
    const target = fresh('deploy');
    await pull({ ...base(), project: 'p8', app: 'app', version: '1', target });
    await pull({ ...base(), project: 'p8', app: 'app', version: 'implied', target });
    expect(fs.statSync(join(target, 'a/b/c')).mode & 0o777).toBe(0o750);
    expect(await readFile(join(target, 'x/y/v.txt'), 'utf8')).toBe('1');

    const long = Array.from({ length: 17 }, (_, i) => `${String(i).padStart(2, '0')}${'d'.repeat(238)}`).join('/');
    const tooLong: Manifest = { ...good, version: 'long', files: [...good.files, { ...good.files[0]!, path: `${long}/f.txt` }] };
    await storeRaw('p8', 'app', 'long', Buffer.from(canonicalManifestJson(tooLong)));
    const before = await snapshot(target);
    const err = await failure(pull({ ...base(), project: 'p8', app: 'app', version: 'long', target }));
    expect(err.code).toBe('UNSAFE_PATH');
    expect(await snapshot(target)).toEqual(before);
  });
});

describe('item 20: every staged file is checked against its whole-file digest', () => {
  it('refuses a multi-chunk file whose chunks verify but whose sha256 is wrong; the next pull still repairs', async () => {
    const src = fresh('src');
    await mkdir(src);
    writeRandomFile(join(src, 'big.bin'), 6 * 1024 * 1024, 'multi');
    await writeFile(join(src, 'small.txt'), 'small\n');
    await push({ ...base(), project: 'p20', app: 'app', version: '1', dir: src });
    const good = await manifestOf('p20', 'app', '1');
    const big = good.files.find((f) => f.path === 'big.bin')!;
    expect(big.chunks?.length).toBeGreaterThan(1);
    const small = good.files.find((f) => f.path === 'small.txt')!;
    const lying: Manifest = { ...good, version: 'lying', files: good.files.map((f) => (f.path === 'big.bin' ? { ...f, sha256: small.sha256 } : f)) };
    await storeRaw('p20', 'app', 'lying', Buffer.from(canonicalManifestJson(lying)));
    const target = fresh('deploy');
    const err = await failure(pull({ ...base(), project: 'p20', app: 'app', version: 'lying', target }));
    expect(err.code).toBe('CHUNK_CORRUPT');
    expect(await readdir(target)).toEqual([]);
    await pull({ ...base(), project: 'p20', app: 'app', version: '1', target });
    expect(await snapshot(target)).toEqual(await snapshot(src));
  });

  it('refuses an empty file with a non-empty digest, a manifest whose version is not its ref\'s, a wrong size, and non-canonical JSON', async () => {
    const good = await manifestOf('p20', 'app', '1');
    const target = fresh('deploy');
    await pull({ ...base(), project: 'p20', app: 'app', version: '1', target });
    const before = await snapshot(target);
    const small = good.files.find((f) => f.path === 'small.txt')!;
    const cases: [string, Buffer][] = [
      ['empty', Buffer.from(canonicalManifestJson({ ...good, version: 'empty', files: [...good.files, { path: 'zero', size: 0, mode: 0o644, mtime: 0, sha256: small.sha256 }] }))],
      ['renamed', Buffer.from(canonicalManifestJson({ ...good, version: 'something-else' }))],
      ['size', Buffer.from(canonicalManifestJson({ ...good, version: 'size', files: good.files.map((f) => (f === small ? { ...f, size: f.size + 1 } : f)) }))],
      ['spaced', Buffer.from(JSON.stringify(JSON.parse(canonicalManifestJson({ ...good, version: 'spaced' })), null, 2))],
    ];
    for (const [version, bytes] of cases) {
      await storeRaw('p20', 'app', version, bytes);
      const err = await failure(pull({ ...base(), project: 'p20', app: 'app', version, target }));
      expect(['MANIFEST_INVALID', 'CHUNK_CORRUPT'], `${version}: ${err.code} ${err.message}`).toContain(err.code);
      expect(await snapshot(target)).toEqual(before);
    }
  });
});

describe('item 21: .kk-staging is not a name a version can use', () => {
  it('refuses it at push and in a manifest', async () => {
    const src = fresh('src');
    await tree(src, { '.kk-staging/keep.txt': 'mine', 'a.txt': 'a' });
    const err = await failure(push({ ...base(), project: 'p21', app: 'app', version: '1', dir: src }));
    expect(err.code).toBe('SOURCE_INVALID');
    expect(err.message).toContain('.kk-staging');
    await push({ ...base(), project: 'p21', app: 'app', version: '1', dir: src, ignore: ['/.kk-staging'] });
    const good = await manifestOf('p21', 'app', '1');
    const bad = { ...good, version: '2', files: [...good.files, { ...good.files[0]!, path: '.kk-staging/keep.txt' }] };
    await storeRaw('p21', 'app', '2', Buffer.from(canonicalManifestJson(bad)));
    expect((await failure(pull({ ...base(), project: 'p21', app: 'app', version: '2', target: fresh('deploy') }))).code).toBe('MANIFEST_INVALID');
  });
});

describe('item 22: read-only directories, pulled by a user who is not root', () => {
  it('applies v1 and v2 with 0555 directories as nobody', async () => {
    const { s1, s2 } = await publishChanging('ro');
    const target = fresh('deploy');
    const stateDir = fresh('state');
    await mkdir(target);
    await mkdir(stateDir);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) {
      const nobody = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
      await chown(target, nobody, nobody);
      await chown(stateDir, nobody, nobody);
      await chmod(sb.root, 0o755);
      execFileSync('chmod', ['-R', 'a+rX', sb.storeDir]);
    }
    const run = (version: string) => {
      const args = [CHILD, sb.storeDir, stateDir, target, 'flip', 'ro', version];
      const out = asRoot ? execFileSync('runuser', ['-u', 'nobody', '--', process.execPath, ...args], { encoding: 'utf8' }) : execFileSync(process.execPath, args, { encoding: 'utf8' });
      return JSON.parse(out.trim().split('\n').at(-1)!) as { ok: boolean; code?: string; message?: string };
    };
    expect(run('1')).toMatchObject({ ok: true });
    expect(await snapshot(target)).toEqual(s1);
    expect(run('2')).toMatchObject({ ok: true });
    expect(await snapshot(target)).toEqual(s2);
    expect(fs.statSync(join(target, 'ro')).mode & 0o777).toBe(0o555);
    expect(run('1')).toMatchObject({ ok: true });
    expect(await snapshot(target)).toEqual(s1);
  });
});

describe('item 26: a dangling symlink with symlinks: follow', () => {
  it('fails SOURCE_INVALID naming the link', async () => {
    const src = fresh('src');
    await tree(src, { 'a.txt': 'a' });
    await symlink(join(src, 'missing-target'), join(src, 'dangling'));
    const err = await failure(push({ ...base(), project: 'p26', app: 'app', version: '1', dir: src, symlinks: 'follow' }));
    expect(err.code).toBe('SOURCE_INVALID');
    expect(err.message).toContain(join(src, 'dangling'));
  });
});

describe('item 4 (pull side): a completed pull is reported once to the store', () => {
  it('reports pulls and up-to-date pulls with the agent id; dry runs and diffs report nothing', async () => {
    const events: unknown[] = [];
    const { Store: S, createMemoryDriver } = await import('@kk/core');
    const driver = Object.assign(createMemoryDriver(), { recordPull: async (e: unknown) => void events.push(e) });
    const store = await S.open(driver, { create: true });
    const src = fresh('src');
    await tree(src, { 'a.txt': 'a' });
    await push({ store, hasher: sb.hasher, stateDir: sb.stateDir, project: 'p4', app: 'app', version: '1', dir: src });
    const target = fresh('deploy');
    const opts = { store, hasher: sb.hasher, stateDir: sb.stateDir, project: 'p4', app: 'app', version: '1', target, agent: 'host/abc' };
    await pull({ ...opts, dryRun: true });
    expect(events).toEqual([]);
    await pull(opts);
    await pull(opts);
    expect(events).toEqual([
      expect.objectContaining({ project: 'p4', app: 'app', version: '1', agent: 'host/abc', upToDate: false }),
      expect.objectContaining({ version: '1', agent: 'host/abc', upToDate: true }),
    ]);
  });
});

describe('item 21: staging in the target when the state dir is on another file system', () => {
  it('stages through a handle in .kk-staging and leaves nothing there afterwards (real tmpfs)', async (ctx) => {
    if (process.getuid?.() !== 0) return ctx.skip('mounting a tmpfs needs root');
    const mnt = fresh('tmpfs');
    await mkdir(mnt);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mnt]);
    } catch {
      if (process.env.CI === 'true') throw new Error('cannot mount tmpfs in CI');
      return ctx.skip('mount -t tmpfs is not permitted here');
    }
    try {
      const { s1, s2 } = await publishChanging('xdev');
      const target = fresh('deploy');
      const opts = { ...base(), stateDir: join(mnt, 'state'), project: 'flip', app: 'xdev', target };
      await pull({ ...opts, version: '1' });
      expect(await snapshot(target)).toEqual(s1);
      await pull({ ...opts, version: '2' });
      expect(await snapshot(target)).toEqual(s2);
      expect(existsSync(join(target, '.kk-staging'))).toBe(false);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});
