import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '@kk/core';

describe('.kkartifact.yml', () => {
  it('is required: a missing file is CONFIG_MISSING naming the file and showing an example', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kk-cfg-'));
    const err = await loadConfig(join(dir, '.kkartifact.yml')).catch((e) => e);
    expect(err.code).toBe('CONFIG_MISSING');
    expect(err.message).toContain(join(dir, '.kkartifact.yml'));
    expect(err.hint).toContain('ignore:');
    await rm(dir, { recursive: true });
  });

  it('reads the seed example, with server_url as a synonym of store', () => {
    const c = parseConfig(
      "server_url: https://repo.example.com\ntoken: xxx\nconcurrency: 8\nchunk_size: 4MB\nretain_versions: 5\nignore:\n  - logs/\n  - tmp/\n  - '*.log'\n",
      '/x/.kkartifact.yml',
    );
    expect(c).toMatchObject({ store: 'https://repo.example.com', token: 'xxx', concurrency: 8, chunkSize: 4 * 1024 * 1024, retainVersions: 5, ignore: ['logs/', 'tmp/', '*.log'], symlinks: 'error' });
  });

  it.each([
    ['unknown key', 'stroe: /x\n', /unknown key "stroe"/],
    ['bad yaml', 'a: [\n', /not valid YAML/],
    ['bad concurrency', 'concurrency: -1\n', /concurrency/],
    ['conflicting stores', 'store: /a\nserver_url: http://b\n', /different stores/],
    ['bad symlinks', 'symlinks: maybe\n', /symlinks/],
    ['tiny chunk size', 'chunk_size: 1KB\n', /chunk_size/],
  ])('rejects %s with CONFIG_INVALID', (_name, text, msg) => {
    let err: { code?: string; message?: string } = {};
    try {
      parseConfig(text, '/x/.kkartifact.yml');
    } catch (e) {
      err = e as typeof err;
    }
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toMatch(msg);
  });

  it('loads from disk', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kk-cfg-'));
    await writeFile(join(dir, '.kkartifact.yml'), 'store: ./store\n');
    expect((await loadConfig(join(dir, '.kkartifact.yml'))).store).toBe('./store');
    await rm(dir, { recursive: true });
  });
});
