// Where the store and the config come from: --store > KK_STORE > the config's store (relative to
// the config file); --config > KK_CONFIG > ./.kkartifact.yml; and --version naming a channel.
import { mkdir, writeFile } from 'node:fs/promises';
import { Store } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, sandbox, writeTree } from './helpers.js';

describe.concurrent('store and config selection', () => {
  let sb: Sandbox;
  const app = ['--project', 'shop', '--app', 'api'];
  const versionsIn = async (args: string[], opts: Parameters<Sandbox['kk']>[1] = {}) => {
    const r = await sb.kkJson(['versions', ...app, ...args], opts);
    expect(r.code, r.stdout).toBe(0);
    return r.json.versions.map((v: { version: string }) => v.version);
  };

  beforeAll(async () => {
    sb = await sandbox();
    // A config in another directory: its relative store path is relative to that directory.
    await mkdir(sb.path('ops'), { recursive: true });
    await writeFile(sb.path('ops', 'kk.yml'), 'store: ./store-a\n');
    await writeTree(sb.path('build'), { 'index.html': 'a\n' });
    const a = await sb.kk(['push', ...app, '--version', '1.0.0', '--path', 'build', '--config', 'ops/kk.yml']);
    expect(a.code, a.stderr).toBe(0);
    const b = await sb.kk(['push', ...app, '--version', '2.0.0', '--path', 'build', '--config', 'ops/kk.yml', '--store', 'store-b']);
    expect(b.code, b.stderr).toBe(0);
  });
  afterAll(() => sb.cleanup());

  it('a relative store in a config file is relative to the config file', async () => {
    expect(await versionsIn(['--store', sb.path('ops', 'store-a')])).toEqual(['1.0.0']);
    expect(await versionsIn(['--store', sb.path('store-b')])).toEqual(['2.0.0']);
    expect(await versionsIn(['--config', sb.path('ops', 'kk.yml')], { cwd: sb.path('build') })).toEqual(['1.0.0']);
  });

  it('--store beats KK_STORE, which beats the config; KK_CONFIG names the config', async () => {
    const env = { KK_CONFIG: sb.path('ops', 'kk.yml') };
    expect(await versionsIn([], { env })).toEqual(['1.0.0']);
    expect(await versionsIn([], { env: { ...env, KK_STORE: sb.path('store-b') } })).toEqual(['2.0.0']);
    expect(await versionsIn(['--store', sb.path('ops', 'store-a')], { env: { ...env, KK_STORE: sb.path('store-b') } })).toEqual(['1.0.0']);
    expect(await versionsIn([], { env: { KK_STORE: 'store-b' } })).toEqual(['2.0.0']);
  });

  it('a store that does not exist is NOT_FOUND for readers, with a hint', async () => {
    const r = await sb.kk(['versions', ...app, '--store', 'nowhere']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^kk: no kk store at nowhere\n {2}.*first `kk push` creates a store/);
  });

  it('--version takes a channel: pull follows `promoted`, versions shows it', async () => {
    const c = ['--config', 'ops/kk.yml', '--store', 'store-c'];
    for (const v of ['1.0.0', '2.0.0']) expect((await sb.kk(['push', ...app, '--version', v, '--path', 'build', ...c])).code).toBe(0);
    const store = await Store.open(createFileDriver({ root: sb.path('store-c') }));
    await store.setChannel('shop', 'api', 'promoted', '1.0.0');
    const pulled = await sb.kkJson(['pull', ...app, '--version', 'promoted', '--path', 'deploy', ...c]);
    expect(pulled.code).toBe(0);
    expect(pulled.json.version).toBe('1.0.0');
    const list = await sb.kkJson(['versions', ...app, '--store', 'store-c']);
    expect(list.json.versions.map((v: { version: string; channels: string[] }) => [v.version, v.channels])).toEqual([
      ['2.0.0', []],
      ['1.0.0', ['promoted']],
    ]);
    expect((await sb.kk(['versions', ...app, '--store', 'store-c'])).stdout).toMatch(/^1\.0\.0 .* promoted$/m);
  });
});
