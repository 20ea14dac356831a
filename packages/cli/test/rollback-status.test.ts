// Acceptance 7: after pulling v1 then v2, `kk rollback` restores v1 exactly (even with the store
// gone) and `kk status` shows which version is deployed.
import { cp, rename, rm, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, pseudoRandom, rsyncDifferences, sandbox, writeTree } from './helpers.js';

describe('rollback and status', () => {
  let sb: Sandbox;
  const app = ['--project', 'shop', '--app', 'api'];
  const deploy = () => sb.path('deploy');

  beforeAll(async () => {
    sb = await sandbox();
    await writeFile(sb.path('.kkartifact.yml'), 'store: ./store\n');
    await writeTree(sb.path('build'), {
      'bin/server': { data: pseudoRandom(2 * 1024 * 1024, 'server-v1'), mode: 0o755 },
      'public/index.html': '<p>v1</p>\n',
      'public/old.css': 'v1 only\n',
    });
    await cp(sb.path('build'), sb.path('v1-src'), { recursive: true, preserveTimestamps: true });
    expect((await sb.kk(['push', ...app, '--version', '1.0.0', '--path', 'build'])).code).toBe(0);
    await writeTree(sb.path('build'), {
      'bin/server': { data: pseudoRandom(2 * 1024 * 1024, 'server-v2'), mode: 0o755 },
      'public/index.html': '<p>v2</p>\n',
      'public/new/app.js': 'v2 only\n',
    });
    await rm(sb.path('build/public/old.css'));
    expect((await sb.kk(['push', ...app, '--version', '2.0.0', '--path', 'build'])).code).toBe(0);
  });
  afterAll(() => sb.cleanup());

  it('status of a directory kk never deployed to; rollback there has nothing to do (exit 1)', async () => {
    const s = await sb.kk(['status', '--path', deploy()]);
    expect(s.code).toBe(0);
    expect(s.stdout).toContain('deployed: nothing yet');
    const r = await sb.kkJson(['rollback', '--path', deploy()]);
    expect(r.code).toBe(1);
    expect(r.json.error.code).toBe('NOTHING_TO_ROLLBACK');
  });

  it('pull v1 then v2; status shows v2 with v1 before it', async () => {
    expect((await sb.kk(['pull', ...app, '--version', '1.0.0', '--path', deploy()])).code).toBe(0);
    expect((await sb.kk(['pull', ...app, '--version', '2.0.0', '--path', deploy()])).code).toBe(0);
    expect(await rsyncDifferences(sb.path('build'), deploy())).toBe('');
    const s = await sb.kkJson(['status', '--path', deploy()]);
    expect(s.json).toMatchObject({ managed: true, current: { project: 'shop', app: 'api', version: '2.0.0' } });
    expect(s.json.lock ?? null).toBeNull();
    expect(s.json.history.map((h: { version: string }) => h.version)).toEqual(['2.0.0', '1.0.0']);
    const human = await sb.kk(['status', '--path', deploy()]);
    expect(human.stdout).toMatch(/deployed: shop\/api 2\.0\.0 \(sha256:[0-9a-f]{12}\) since \d{4}-/);
    expect(human.stdout).toMatch(/previous:\n {4}1\.0\.0 /);
    expect(human.stdout).toContain('lock: free');
  });

  it('rollback --dry-run changes nothing; rollback restores v1 exactly without the store', async () => {
    const dry = await sb.kk(['rollback', '--path', deploy(), '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/^dry run: .* -> shop\/api 1\.0\.0/);
    expect(await rsyncDifferences(sb.path('build'), deploy())).toBe('');

    await rename(sb.path('store'), sb.path('store-away'));
    try {
      const r = await sb.kk(['rollback', '--path', deploy()]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^rolled back shop\/api 1\.0\.0 to .* \(was 2\.0\.0\)/);
    } finally {
      await rename(sb.path('store-away'), sb.path('store'));
    }
    expect(await rsyncDifferences(sb.path('v1-src'), deploy())).toBe('');

    const s = await sb.kkJson(['status', '--path', deploy()]);
    expect(s.json.current.version).toBe('1.0.0');
    expect(s.json.history.map((h: { version: string }) => h.version)).toEqual(['1.0.0', '2.0.0', '1.0.0']);
    expect((await sb.kk(['status', '--path', deploy()])).stdout).toContain('deployed: shop/api 1.0.0');
    expect((await sb.kk(['verify', '--path', deploy()])).code).toBe(0);
  });

  it('rollback --to a version never deployed there exits 1 and says how to get it', async () => {
    const r = await sb.kk(['rollback', '--path', deploy(), '--to', '9.9.9']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^kk: 9\.9\.9 was never deployed to .*\n {2}pull it instead/);
  });
});
