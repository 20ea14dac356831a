// Issue 10 through the built kk: rollback in the shape of push and pull (item 8), diff's exit
// codes (item 11), refusals of an empty build and of another app (item 6), the file cache in
// status (item 7), and the diff listing of what ignore rules protect (item 5).
import { mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, sandbox, writeTree } from './helpers.js';

describe('kk hardening (issue 10)', () => {
  let sb: Sandbox;
  const app = ['--project', 'shop', '--app', 'api'];
  const deploy = () => sb.path('deploy');

  beforeAll(async () => {
    sb = await sandbox();
    await writeFile(sb.path('.kkartifact.yml'), 'store: ./store\nignore:\n  - "logs/"\n');
    await writeTree(sb.path('build'), { 'index.html': 'v1\n', 'app.js': 'one\n' });
    expect((await sb.kk(['push', ...app, '--version', '1', '--path', 'build'])).code).toBe(0);
    await writeTree(sb.path('build'), { 'index.html': 'v2\n' });
    expect((await sb.kk(['push', ...app, '--version', '2', '--path', 'build'])).code).toBe(0);
    await writeTree(sb.path('other'), { 'other.txt': 'other app\n' });
    expect((await sb.kk(['push', '--project', 'shop', '--app', 'web', '--version', '1', '--path', 'other'])).code).toBe(0);
  });
  afterAll(() => sb.cleanup());

  it('push of an empty build exits 1 (SOURCE_INVALID) unless --allow-empty', async () => {
    await mkdir(sb.path('empty'), { recursive: true });
    const r = await sb.kkJson(['push', ...app, '--version', 'e', '--path', 'empty']);
    expect(r.code).toBe(1);
    expect(r.json.error.code).toBe('SOURCE_INVALID');
    expect((await sb.kk(['push', ...app, '--version', 'e', '--path', 'empty', '--allow-empty'])).code).toBe(0);
  });

  it('diff exits 0 with nothing to do, 1 with differences, 2 on an error; lists what the rules protect', async () => {
    expect((await sb.kk(['pull', ...app, '--version', '1', '--path', deploy()])).code).toBe(0);
    await mkdir(sb.path('deploy/logs'), { recursive: true });
    await writeFile(sb.path('deploy/logs/run.log'), 'runtime\n');
    const same = await sb.kk(['diff', ...app, '--version', '1', '--path', deploy()]);
    expect(same.code, same.stderr).toBe(0);
    const differs = await sb.kk(['diff', ...app, '--version', '2', '--path', deploy()]);
    expect(differs.code).toBe(1);
    expect(differs.stdout).toContain('= logs/  (rule "logs/" from the local config)');
    const missing = await sb.kkJson(['diff', ...app, '--version', '9.9.9', '--path', deploy()]);
    expect(missing.code).toBe(2);
    expect(missing.json.error.code).toBe('NOT_FOUND');
    const bad = await sb.kk(['diff', ...app, '--from', '1', '--to', 'nope']);
    expect(bad.code).toBe(2);
  });

  it('pull of another app into the directory is refused (TARGET_CONFLICT) unless --force', async () => {
    const r = await sb.kkJson(['pull', '--project', 'shop', '--app', 'web', '--version', '1', '--path', deploy()]);
    expect(r.code).toBe(1);
    expect(r.json.error.code).toBe('TARGET_CONFLICT');
  });

  it('rollback accepts --project --app --path, refuses another app, and status shows the file cache', async () => {
    expect((await sb.kk(['pull', ...app, '--version', '2', '--path', deploy()])).code).toBe(0);
    const other = await sb.kkJson(['rollback', '--project', 'shop', '--app', 'web', '--path', deploy()]);
    expect(other.code).toBe(1);
    expect(other.json.error.code).toBe('TARGET_CONFLICT');
    const s = await sb.kk(['status', '--path', deploy()]);
    expect(s.stdout).toMatch(/file cache: \d+ files?, \d+ B held by the cache alone/);
    const r = await sb.kk(['rollback', ...app, '--path', deploy()]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^rolled back shop\/api 1 /);
    const status = await sb.kkJson(['status', '--path', deploy()]);
    expect(status.json.current.version).toBe('1');
    expect(status.json.cache).toMatchObject({ files: expect.any(Number), bytes: expect.any(Number) });
  });
});
