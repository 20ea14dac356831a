import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isKkError, isWriteDriver } from '@kk/core';
import type { Driver, WriteDriver } from '@kk/core';
import { runDriverConformance } from '@kk/testkit';
import { createFileDriver, describeStoreUrl, openDriver, registerDriver } from '../src/index.js';

const freshRoot = () => mkdtemp(path.join(tmpdir(), 'kk-file-driver-'));

runDriverConformance('file', async () => {
  const root = await freshRoot();
  return { driver: createFileDriver({ root }), cleanup: () => rm(root, { recursive: true, force: true }) };
});

/** Every file under `dir`, as `/`-separated paths relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)).split(path.sep).join('/'))
    .sort();
}

describe('file driver', () => {
  let root: string;
  beforeEach(async () => {
    root = await freshRoot();
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('stores key chunks/ab/abcd at <root>/chunks/ab/abcd with the exact bytes', async () => {
    const driver = createFileDriver({ root });
    const data = Buffer.from([0, 1, 2, 254, 255]);
    await driver.put('chunks/ab/abcd', data);
    expect((await readFile(path.join(root, 'chunks', 'ab', 'abcd'))).equals(data)).toBe(true);
    expect(await driver.putIfAbsent('chunks/ab/abce', data)).toBe(true);
    expect(await filesUnder(root)).toEqual(['chunks/ab/abcd', 'chunks/ab/abce']);
  });

  it('rejects unsafe keys with a TypeError and writes nothing', async () => {
    const driver = createFileDriver({ root, fsync: false });
    for (const key of ['../x', '/etc/x', 'a//b', 'a\\b', 'a/./b', 'a/..', 'a\0b', '', 'a/', '.tmp-x']) {
      await expect(driver.put(key, Buffer.from('x')), key).rejects.toThrow(TypeError);
      await expect(driver.putIfAbsent(key, Buffer.from('x')), key).rejects.toThrow(TypeError);
      await expect(driver.get(key), key).rejects.toThrow(TypeError);
      await expect(driver.delete(key), key).rejects.toThrow(TypeError);
    }
    await expect(driver.listChildren('../')).rejects.toThrow(TypeError);
    await expect(driver.list('../')[Symbol.asyncIterator]().next()).rejects.toThrow(TypeError);
    expect(await readdir(root)).toEqual([]);
    expect(await readdir(path.dirname(root))).not.toContain('x');
  });

  it('leaves no temp file behind after put, putIfAbsent and a lost create race', async () => {
    const driver = createFileDriver({ root });
    await driver.put('a/b', Buffer.from('1'));
    await driver.put('a/b', Buffer.from('2'));
    await Promise.all(Array.from({ length: 8 }, (_, i) => driver.putIfAbsent('a/c', Buffer.from(String(i)))));
    expect(await driver.putIfAbsent('a/c', Buffer.from('late'))).toBe(false);
    expect(await filesUnder(root)).toEqual(['a/b', 'a/c']);
    expect(await readFile(path.join(root, 'a', 'b'), 'utf8')).toBe('2');
  });

  it('list and listChildren skip temp files a crashed writer left behind', async () => {
    const driver = createFileDriver({ root });
    await driver.put('chunks/ab/abcd', Buffer.from('1'));
    await writeFile(path.join(root, 'chunks', 'ab', '.tmp-0123456789abcdef'), 'partial');
    const listed = [];
    for await (const info of driver.list('')) listed.push(info.key);
    expect(listed).toEqual(['chunks/ab/abcd']);
    expect(await driver.listChildren('chunks/ab/')).toEqual(['abcd']);
  });

  it('removes directories emptied by delete, but never the root', async () => {
    const driver = createFileDriver({ root });
    await driver.put('x/y/z', Buffer.from('1'));
    await driver.put('x/w', Buffer.from('2'));
    await driver.delete('x/y/z');
    expect(await readdir(path.join(root, 'x'))).toEqual(['w']);
    await driver.delete('x/w');
    expect(await readdir(root)).toEqual([]);
  });

  it('translates native errors other than not-found to KkError BACKEND', async () => {
    const driver = createFileDriver({ root });
    await driver.put('file', Buffer.from('1'));
    const err = await driver.put('file/child', Buffer.from('2')).catch((e: unknown) => e);
    expect(isKkError(err, 'BACKEND')).toBe(true);
    expect((err as Error).cause).toBeInstanceOf(Error);
  });

  it('requires an absolute root', () => {
    expect(() => createFileDriver({ root: 'relative/store' })).toThrow(TypeError);
  });
});

describe('file driver under concurrency (issue 10 item 1)', () => {
  let root: string;
  beforeEach(async () => {
    root = await freshRoot();
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  // Writers and deleters on sibling keys: every delete may empty and rmdir the parents that a
  // writer on a sibling key is creating. Two driver instances share the root, as two server
  // processes on one store would (neither knows the other's directories). Bounded by count.
  it('many writers and deleters on sibling keys: every write lands, no error', async () => {
    const a = createFileDriver({ root, fsync: false });
    const b = createFileDriver({ root, fsync: false });
    const LANES = 16;
    const ROUNDS = 150;
    const errors: unknown[] = [];
    const lane = async (i: number) => {
      const d = i % 2 ? a : b;
      for (let r = 0; r < ROUNDS; r++) {
        const key = `deep/${r % 3}/dir/k${i}`;
        try {
          if (r % 2) await d.put(key, Buffer.from(`${i}.${r}`));
          else expect(await d.putIfAbsent(key, Buffer.from(`${i}.${r}`))).toBe(true);
          expect((await d.get(key))?.toString()).toBe(`${i}.${r}`);
          await d.delete(key);
        } catch (err) {
          errors.push(err);
        }
      }
      await d.put(`deep/0/dir/final${i}`, Buffer.from(String(i)));
    };
    await Promise.all(Array.from({ length: LANES }, (_, i) => lane(i)));
    expect(errors.map(String).slice(0, 3)).toEqual([]);
    expect(await filesUnder(root)).toEqual(Array.from({ length: LANES }, (_, i) => `deep/0/dir/final${i}`).sort());
    for (let i = 0; i < LANES; i++) expect((await readFile(path.join(root, 'deep', '0', 'dir', `final${i}`), 'utf8'))).toBe(String(i));
  });
});

function writable(driver: Driver): WriteDriver {
  if (!isWriteDriver(driver)) throw new Error(`${driver.name} driver is read-only`);
  return driver;
}

describe('openDriver', () => {
  let root: string;
  beforeEach(async () => {
    root = await freshRoot();
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('opens file:///abs/path as a file driver rooted there', async () => {
    const driver = writable(await openDriver(`file://${root}/store`));
    expect(driver.name).toBe('file');
    await driver.put('k/v', Buffer.from('abs'));
    expect(await readFile(path.join(root, 'store', 'k', 'v'), 'utf8')).toBe('abs');
  });

  it('opens a relative path against cwd', async () => {
    const driver = writable(await openDriver('./rel/store', { cwd: root }));
    await driver.put('k', Buffer.from('rel'));
    expect(await readFile(path.join(root, 'rel', 'store', 'k'), 'utf8')).toBe('rel');
  });

  it('resolves a relative path against process.cwd() by default', async () => {
    const driver = writable(await openDriver(path.relative(process.cwd(), path.join(root, 'p'))));
    await driver.put('k', Buffer.from('cwd'));
    expect(await readFile(path.join(root, 'p', 'k'), 'utf8')).toBe('cwd');
  });

  it('rejects an unknown scheme with CONFIG_INVALID naming the supported ones', async () => {
    const err = await openDriver('gopher://host/store').catch((e: unknown) => e);
    expect(isKkError(err, 'CONFIG_INVALID')).toBe(true);
    // Other schemes (ssh, ...) join the list as their drivers register.
    expect((err as Error).message).toMatch(/^unknown store scheme "gopher:" — supported: (docker, )?file, http, https, s3(, [a-z0-9+]+)*$/);
  });

  it('rejects a file URL with a remote host', async () => {
    const err = await openDriver('file://elsewhere/store').catch((e: unknown) => e);
    expect(isKkError(err, 'CONFIG_INVALID')).toBe(true);
  });
});

describe('registerDriver', () => {
  it('rejects a duplicate scheme', () => {
    expect(() => registerDriver('file', () => createFileDriver({ root: '/nowhere' }))).toThrow(TypeError);
    expect(() => registerDriver('FILE:', () => createFileDriver({ root: '/nowhere' }))).toThrow(TypeError);
  });
});

describe('describeStoreUrl', () => {
  it('redacts passwords, token user names and secret query parameters', () => {
    expect(describeStoreUrl('https://alice:hunter2@kk.example:8443/')).toBe('https://alice:***@kk.example:8443/');
    expect(describeStoreUrl('https://ghp_secret@kk.example/')).toBe('https://***@kk.example/');
    expect(describeStoreUrl('s3://bucket/pre?endpoint=http%3A%2F%2Fminio%3A9000&region=eu&secretAccessKey=abc')).toBe(
      's3://bucket/pre?endpoint=http%3A%2F%2Fminio%3A9000&region=eu&secretAccessKey=***',
    );
    expect(describeStoreUrl('ssh://deploy@host:2222/srv/kk')).toBe('ssh://deploy@host:2222/srv/kk');
    expect(describeStoreUrl('./relative/store')).toBe('./relative/store');
  });
});
