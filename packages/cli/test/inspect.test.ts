// The read-only commands: projects, apps, manifest in its three formats, with only --store.
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, run, sandbox, writeTree } from './helpers.js';

describe.concurrent('projects, apps, manifest', () => {
  let sb: Sandbox;
  const store = ['--store', 'store'];
  beforeAll(async () => {
    sb = await sandbox();
    await writeFile(sb.path('.kkartifact.yml'), 'store: ./store\n');
    await writeTree(sb.path('build'), { 'bin/app': { data: '#!/bin/sh\necho hi\n', mode: 0o755 }, 'etc/app.conf': 'x=1\n' });
    for (const [project, app] of [['shop', 'api'], ['shop', 'web'], ['blog', 'site']]) {
      const r = await sb.kk(['push', '--project', project!, '--app', app!, '--version', '1.0.0', '--path', 'build', '--git-commit', 'abc123']);
      expect(r.code, r.stderr).toBe(0);
    }
    expect((await sb.kk(['pull', '--project', 'shop', '--app', 'api', '--version', '1.0.0', '--path', 'deploy'])).code).toBe(0);
    await writeFile(sb.path('.kkartifact.yml'), 'store: ./elsewhere\n'); // the read-only commands below use --store only
  });
  afterAll(() => sb.cleanup());

  it('lists projects and apps with only --store, from a directory without a config', async () => {
    const cwd = sb.path('build');
    expect((await sb.kk(['projects', '--store', sb.path('store')], { cwd })).stdout).toBe('blog\nshop\n');
    expect((await sb.kkJson(['apps', '--project', 'shop', '--store', sb.path('store')], { cwd })).json).toMatchObject({ project: 'shop', apps: ['api', 'web'] });
    const r = await sb.kk(['projects'], { cwd });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^kk: no store given/);
  });

  it('manifest --format json is the canonical manifest: its sha256 is the version\'s digest', async () => {
    const r = await sb.kk(['manifest', '--project', 'shop', '--app', 'api', '--version', 'latest', ...store]);
    expect(r.code).toBe(0);
    const versions = await sb.kkJson(['versions', '--project', 'shop', '--app', 'api', ...store]);
    const digest = `sha256:${createHash('sha256').update(r.stdout.replace(/\n$/, '')).digest('hex')}`;
    expect(digest).toBe(versions.json.versions[0].manifest);
    expect(JSON.parse(r.stdout)).toMatchObject({ project: 'shop', app: 'api', version: '1.0.0', git_commit: 'abc123' });
  });

  it('manifest --format meta.yaml has the seed\'s fields', async () => {
    const r = await sb.kk(['manifest', '-p', 'shop', '-a', 'api', '--version', '1.0.0', '--format', 'meta.yaml', ...store]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^project: shop\napp: api\nversion: 1\.0\.0\ngit_commit: abc123\nbuild_time: \S+\nbuilder: \S+\nfiles:\n {2}- path: bin\/app\n {4}sha256: [0-9a-f]{64}\n {4}size: 18\n/);
  });

  it('manifest --path --format sha256sum checks the deployed tree with sha256sum -c', async () => {
    const r = await sb.kk(['manifest', '--path', 'deploy', '--format', 'sha256sum']);
    expect(r.code, r.stderr).toBe(0);
    await writeFile(sb.path('sums'), r.stdout);
    const check = await run('sha256sum', ['-c', sb.path('sums')], { cwd: sb.path('deploy') });
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toBe('bin/app: OK\netc/app.conf: OK\n');
    await writeFile(sb.path('deploy', 'etc/app.conf'), 'x=2\n');
    expect((await run('sha256sum', ['-c', sb.path('sums')], { cwd: sb.path('deploy') })).code).toBe(1);
  });

  it('manifest of an unknown version exits 1; without a version or path it is a usage error', async () => {
    expect((await sb.kk(['manifest', '-p', 'shop', '-a', 'api', '--version', '9', ...store])).code).toBe(1);
    expect((await sb.kk(['manifest', ...store])).code).toBe(2);
  });
});
