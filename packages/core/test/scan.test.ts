import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { scanTree } from '@kk/core';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kk-scan-'));
  await mkdir(join(dir, 'src/logs'), { recursive: true });
  await mkdir(join(dir, 'logs'), { recursive: true });
  await writeFile(join(dir, 'src/a.js'), 'a');
  await writeFile(join(dir, 'src/logs/keep.txt'), 'nested logs dir');
  await writeFile(join(dir, 'logs/x.log'), 'x');
  await writeFile(join(dir, 'debug.log'), 'x');
  await writeFile(join(dir, '.hidden'), 'h');
});
afterEach(async () => rm(dir, { recursive: true, force: true }));

describe('scanTree', () => {
  it('applies gitignore-syntax rules and includes dotfiles', async () => {
    const r = await scanTree(dir, { ignore: ['/logs/', '*.log'] });
    expect(r.files.map((f) => f.path)).toEqual(['.hidden', 'src/a.js', 'src/logs/keep.txt']);
    expect(r.dirs.map((d) => d.path)).toEqual(['src', 'src/logs']);
    const all = await scanTree(dir, { ignore: ['logs/'] });
    expect(all.files.map((f) => f.path)).toEqual(['.hidden', 'debug.log', 'src/a.js']);
  });

  it('refuses symlinks by default, skips or follows them when configured', async () => {
    await symlink(join(dir, 'src/a.js'), join(dir, 'link.js'));
    await expect(scanTree(dir)).rejects.toMatchObject({ code: 'SOURCE_INVALID', message: expect.stringMatching(/symlink/) });
    const skipped = await scanTree(dir, { symlinks: 'skip' });
    expect(skipped.files.map((f) => f.path)).not.toContain('link.js');
    expect(skipped.skippedSymlinks).toBe(1);
    const followed = await scanTree(dir, { symlinks: 'follow' });
    expect(followed.files.find((f) => f.path === 'link.js')?.size).toBe(1);
  });

  it('stops a too-deep tree with a clear error', async () => {
    await mkdir(join(dir, ...Array.from({ length: 12 }, (_, i) => `d${i}`)), { recursive: true });
    await expect(scanTree(dir, { maxDepth: 8 })).rejects.toMatchObject({ code: 'SOURCE_INVALID', message: expect.stringMatching(/deeper than 8/) });
  });
});
