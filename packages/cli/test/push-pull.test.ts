// Acceptance 2: the seed 001 7.4 invocations, with --config .kkartifact.yml naming a file store,
// push and pull a tree byte-exactly (checked independently with rsync).
import { readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, modes, pseudoRandom, rsyncDifferences, sandbox, writeTree } from './helpers.js';

describe('seed 001 7.4 push and pull', () => {
  let sb: Sandbox;
  const build = () => sb.path('local', 'build', 'path');
  const deploy = () => sb.path('opt', 'apps', 'myproject', 'myapp');
  const seedArgs = (cmd: 'push' | 'pull', version: string, path: string) => [
    cmd, '--project', 'myproject', '--app', 'myapp', '--version', version, '--path', path, '--config', '.kkartifact.yml',
  ];

  beforeAll(async () => {
    sb = await sandbox();
    await writeFile(sb.path('.kkartifact.yml'), "store: ./repo-store\nconcurrency: 4\nignore:\n  - logs/\n  - tmp/\n  - '*.log'\n");
    await writeTree(build(), {
      'bin/app': { data: pseudoRandom(3 * 1024 * 1024 + 17, 'app'), mode: 0o755 },
      'config/app.yaml': 'listen: 8080\n',
      'config/empty.conf': '',
      'static/日本語 name.txt': 'unicode and a space\n',
      'static/deep/er/still/file.js': 'export const x = 1;\n',
      'static/private.key': { data: 'secret\n', mode: 0o600 },
      'build.log': 'ignored by *.log\n',
      'logs/today.txt': 'ignored by logs/\n',
    });
  });
  afterAll(() => sb.cleanup());

  it('pushes with the seed flags and pulls the tree back byte for byte', async () => {
    const pushed = await sb.kk(seedArgs('push', '1.0.0', build()));
    expect(pushed.stderr).toBe('');
    expect(pushed.code).toBe(0);
    expect(pushed.stdout).toMatch(/pushed myproject\/myapp 1\.0\.0/);

    const pulled = await sb.kk(seedArgs('pull', '1.0.0', deploy()));
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(await rsyncDifferences(build(), deploy(), ['logs/', '*.log'])).toBe('');
    // Ignored paths were never stored, so they are not deployed.
    await expect(readFile(`${deploy()}/build.log`)).rejects.toThrow(/ENOENT/);
    await expect(readFile(`${deploy()}/logs/today.txt`)).rejects.toThrow(/ENOENT/);
    // Permission bits travel too (rsync -rc does not compare them).
    const want = await modes(build());
    const got = await modes(deploy());
    for (const p of ['bin/app', 'static/private.key', 'config/app.yaml']) expect(got[p]).toBe(want[p]);
  });

  it('a second version mirrors changes and deletions and leaves ignored target files alone', async () => {
    await writeTree(build(), { 'config/app.yaml': 'listen: 9090\n', 'static/new.css': 'a{}\n' });
    await rm(sb.path('local/build/path/static/deep'), { recursive: true });
    await mkdir(`${deploy()}/logs`, { recursive: true });
    await writeFile(`${deploy()}/logs/runtime.log`, 'written by the running app\n');

    expect((await sb.kk(seedArgs('push', '1.0.1', build()))).code).toBe(0);
    const pulled = await sb.kk(seedArgs('pull', '1.0.1', deploy()));
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(pulled.stdout).toMatch(/\(was 1\.0\.0\): \+1 ~1 -1 files/);

    expect(await rsyncDifferences(build(), deploy(), ['logs/', '*.log'])).toBe('');
    expect(await readFile(`${deploy()}/logs/runtime.log`, 'utf8')).toBe('written by the running app\n');
  });
});
