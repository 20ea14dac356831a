// Acceptance 5: every exit code class, produced by the built kk; and the code map itself.
import { hostname } from 'node:os';
import { open, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ERROR_CODES, KkError, TargetState, type KkErrorCode } from '@kk/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT, describeFailure } from '../src/exit-codes.js';
import { type Sandbox, pseudoRandom, sandbox, writeTree } from './helpers.js';

describe('describeFailure', () => {
  const expected: Record<number, KkErrorCode[]> = {
    [EXIT.USAGE]: ['CONFIG_MISSING', 'CONFIG_INVALID', 'INVALID_NAME'],
    [EXIT.INTEGRITY]: ['CHUNK_CORRUPT', 'UNSAFE_PATH', 'MANIFEST_INVALID'],
    [EXIT.CONFLICT]: ['VERSION_EXISTS', 'LOCKED', 'PAUSED'],
  };
  it('maps every KkError code to its documented exit code', () => {
    for (const code of Object.keys(ERROR_CODES) as KkErrorCode[]) {
      const want = Number(Object.entries(expected).find(([, codes]) => codes.includes(code))?.[0] ?? EXIT.ERROR);
      expect(describeFailure(new KkError(code, 'x')).exitCode, code).toBe(want);
    }
  });
  it('keeps the hint and details, and turns oclif usage errors into one line', () => {
    const r = describeFailure(new KkError('LOCKED', 'busy', { hint: 'wait', details: { pid: 1 } }));
    expect(r).toEqual({ code: 'LOCKED', exitCode: 4, message: 'busy', hint: 'wait', details: { pid: 1 } });
    const usage = Object.assign(new Error('The following error occurred:\n  Missing required flag app\nSee more help with --help'), { oclif: { exit: 2 } });
    expect(describeFailure(usage)).toMatchObject({ code: 'USAGE', exitCode: 2, message: 'Missing required flag app', hint: 'See more help with --help' });
    expect(describeFailure(new Error('boom'))).toMatchObject({ code: 'ERROR', exitCode: 1, message: 'boom' });
  });
});

describe.concurrent('exit codes of the built kk', () => {
  let sb: Sandbox;
  const common = ['--project', 'shop', '--app', 'api'];
  beforeAll(async () => {
    sb = await sandbox();
    await writeFile(sb.path('.kkartifact.yml'), 'store: store\n');
    await writeTree(sb.path('build'), { 'blob.bin': pseudoRandom(200_000, 'blob'), 'index.html': '<p>v1</p>\n' });
    const r = await sb.kk(['push', ...common, '--version', '1.0.0', '--path', 'build']);
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(() => sb.cleanup());

  it('2: push without a config file names the file and shows a minimal example', async () => {
    await writeTree(sb.path('noconfig', 'build'), { a: 'a' });
    const r = await sb.kk(['push', ...common, '--version', '9.0.0', '--path', 'build'], { cwd: sb.path('noconfig') });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    const [first, ...rest] = r.stderr.trimEnd().split('\n');
    expect(first).toContain(sb.path('noconfig', '.kkartifact.yml'));
    expect(first).toMatch(/^kk: .*does not exist/);
    expect(rest.join('\n')).toMatch(/store: /);
    expect(rest.join('\n')).toMatch(/ignore:/);
    // Nothing was sent: the store never learned about 9.0.0.
    const v = await sb.kkJson(['versions', ...common]);
    expect(v.json.versions.map((x: { version: string }) => x.version)).toEqual(['1.0.0']);
  });

  it('2: --config naming a missing file, and pull without one', async () => {
    const r = await sb.kk(['versions', ...common, '--config', 'nope.yml']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(sb.path('nope.yml'));
    const p = await sb.kk(['pull', ...common, '--version', '1.0.0', '--path', 'd', '--store', 'store'], { cwd: sb.path('noconfig') });
    expect(p.code).toBe(2);
  });

  it('2: a malformed config, an invalid name, an unknown flag, a missing flag', async () => {
    await writeFile(sb.path('bad.yml'), 'store: store\nretain_versions: many\n');
    const bad = await sb.kk(['push', ...common, '--version', '2', '--path', 'build', '--config', 'bad.yml']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/retain_versions/);
    const name = await sb.kkJson(['versions', '--project', 'Shop!', '--app', 'api']);
    expect(name.code).toBe(2);
    expect(name.json.error.code).toBe('INVALID_NAME');
    expect((await sb.kk(['versions', ...common, '--no-such-flag'])).code).toBe(2);
    const missing = await sb.kk(['pull', '--project', 'shop', '--version', '1.0.0', '--path', 'x']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^kk: Missing required flag app/);
  });

  it('1: an unknown version', async () => {
    const r = await sb.kkJson(['pull', ...common, '--version', '7.7.7', '--path', 'deploy-unknown']);
    expect(r.code).toBe(1);
    expect(r.json.error).toMatchObject({ code: 'NOT_FOUND', exitCode: 1 });
    expect(r.json.error.message).toContain('7.7.7');
    const human = await sb.kk(['pull', ...common, '--version', '7.7.7', '--path', 'deploy-unknown']);
    expect(human.code).toBe(1);
    expect(human.stderr).toMatch(/^kk: shop\/api has no version or channel "7\.7\.7"\n {2}\S/);
  });

  it('3: a corrupt chunk in the store, and the deploy directory stays empty', async () => {
    // A separate store, so corrupting it does not disturb the other cases.
    await writeFile(sb.path('corrupt.yml'), 'store: corrupt-store\n');
    expect((await sb.kk(['push', ...common, '--version', '1.0.0', '--path', 'build', '--config', 'corrupt.yml', '--packs', 'none'])).code).toBe(0);
    const m = await sb.kkJson(['manifest', ...common, '--version', '1.0.0', '--config', 'corrupt.yml']);
    const blob = m.json.manifest.files.find((f: { path: string }) => f.path === 'blob.bin');
    const hex = blob.sha256.slice('sha256:'.length);
    const fh = await open(sb.path('corrupt-store', 'chunks', hex.slice(0, 2), hex), 'r+');
    await fh.write(Buffer.from([0xff, 0x00, 0xff]), 0, 3, 1000);
    await fh.close();
    const r = await sb.kkJson(['pull', ...common, '--version', '1.0.0', '--path', 'deploy-corrupt', '--config', 'corrupt.yml']);
    expect(r.code).toBe(3);
    expect(r.json.error.code).toBe('CHUNK_CORRUPT');
    expect(await readdir(sb.path('deploy-corrupt'))).toEqual([]);
  });

  it('4: pushing other content under an existing version', async () => {
    await writeTree(sb.path('build2'), { 'index.html': '<p>other</p>\n' });
    const r = await sb.kk(['push', ...common, '--version', '1.0.0', '--path', 'build2']);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^kk: shop\/api version 1\.0\.0 already exists with different content\n {2}.*new version/);
    // The same content again is fine.
    expect((await sb.kk(['push', ...common, '--version', '1.0.0', '--path', 'build'])).code).toBe(0);
  });

  it('4: the apply lock held by a live process; status names the holder', async () => {
    const target = sb.path('deploy-locked');
    const state = new TargetState(target, sb.stateDir);
    await writeTree(state.dir, {
      lock: JSON.stringify({ pid: process.pid, host: hostname(), started: new Date().toISOString(), command: 'pull' }),
    });
    const r = await sb.kk(['pull', ...common, '--version', '1.0.0', '--path', target]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain(`pid ${process.pid}`);
    const s = await sb.kkJson(['status', '--path', target]);
    expect(s.json.lock).toMatchObject({ pid: process.pid, stale: false, command: 'pull' });
    const human = await sb.kk(['status', '--path', target]);
    expect(human.stdout).toContain(`lock: held by pid ${process.pid}`);
    await expect(readdir(target)).rejects.toThrow(/ENOENT/);
  });

  it('3: verify finds a changed file; 0 once it is restored', async () => {
    const target = sb.path('deploy-verify');
    expect((await sb.kk(['pull', ...common, '--version', '1.0.0', '--path', target])).code).toBe(0);
    expect((await sb.kk(['verify', '--path', target])).code).toBe(0);
    await writeFile(join(target, 'index.html'), '<p>v9</p>\n');
    await writeFile(join(target, 'stray.txt'), 'not in the version\n');
    const r = await sb.kkJson(['verify', '--path', target]);
    expect(r.code).toBe(3);
    expect(r.json.ok).toBe(false);
    expect(r.json.problems.map((p: { path: string; problem: string }) => `${p.problem} ${p.path}`)).toEqual(
      expect.arrayContaining(['content index.html', 'extra stray.txt']),
    );
    // pull --verify rehashes instead of trusting recorded stats, and repairs both.
    expect((await sb.kk(['pull', ...common, '--version', '1.0.0', '--path', target, '--verify'])).code).toBe(0);
    const again = await sb.kkJson(['verify', '--path', target]);
    expect(again.code).toBe(0);
    expect(again.json).toMatchObject({ ok: true, problems: [] });
  });
});
