import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isKkError } from '@kk/core';
import { runDriverConformance, sshdUnavailable, startSshd } from '@kk/testkit';
import type { SshdBackend } from '@kk/testkit';
import { createFileDriver, describeStoreUrl, openDriver } from '../src/index.js';
import { createSshDriver, sshDriverOptionsFromUrl, type SshDriverOptions } from '../src/ssh.js';

const unavailable = sshdUnavailable();
if (unavailable && process.env.CI) throw new Error(`CI must run the ssh driver tests: ${unavailable}`);

/** Every file under `dir` (hidden ones included), as `/`-separated relative paths. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)).split(path.sep).join('/'))
    .sort();
}

describe.skipIf(!!unavailable)(`ssh driver against sshd on 127.0.0.1${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  runDriverConformance('ssh (sshd)', async () => {
    const sshd = await startSshd();
    const root = await mkdtemp(path.join(tmpdir(), 'kk-ssh-conformance-'));
    return {
      driver: createSshDriver(sshDriverOptionsFromUrl(new URL(sshd.storeUrl(root)))),
      cleanup: async () => {
        await sshd.stop();
        await rm(root, { recursive: true, force: true });
      },
    };
  });

  describe('ssh driver', () => {
    let sshd: SshdBackend;
    let base: string;
    let n = 0;
    const fresh = async (extra: Partial<SshDriverOptions> = {}) => {
      const root = path.join(base, `case${n++}`);
      return { root, driver: createSshDriver({ ...sshDriverOptionsFromUrl(new URL(sshd.storeUrl(root))), ...extra }) };
    };
    beforeAll(async () => {
      sshd = await startSshd();
      base = await mkdtemp(path.join(tmpdir(), 'kk-ssh-driver-'));
    });
    afterAll(async () => {
      await sshd?.stop();
      if (base) await rm(base, { recursive: true, force: true });
    });

    it("lays objects out exactly as the file store does, readable by the file driver both ways, with no temp files left", async () => {
      const { root, driver } = await fresh();
      const data = Buffer.from([0, 1, 2, 254, 255]);
      await driver.put('chunks/ab/abcd', data);
      expect(await driver.putIfAbsent('refs/p/a/1.0.0+build', Buffer.from('{}'))).toBe(true);
      expect(await driver.putIfAbsent('chunks/ab/abce', data)).toBe(true);
      await driver.flush();
      expect((await readFile(path.join(root, 'chunks', 'ab', 'abcd'))).equals(data)).toBe(true);
      // The file driver wrote this one; the ssh driver reads it.
      const file = createFileDriver({ root });
      await file.put('manifests/cd/cdef', Buffer.from('from the file driver'));
      expect(String(await driver.get('manifests/cd/cdef'))).toBe('from the file driver');
      expect(await driver.listChildren('')).toEqual(['chunks', 'manifests', 'refs']);
      await driver.close();
      expect(await filesUnder(root)).toEqual(['chunks/ab/abcd', 'chunks/ab/abce', 'manifests/cd/cdef', 'refs/p/a/1.0.0+build']);
      expect(String(await file.get('refs/p/a/1.0.0+build'))).toBe('{}');
    });

    it('rejects unsafe keys with a TypeError before connecting', async () => {
      const { root, driver } = await fresh();
      for (const key of ['../x', '/etc/x', 'a//b', 'a\\b', 'a/./b', 'a/..', 'a\0b', '', 'a/', '.tmp-x', 'a\nb', 'a\rb']) {
        await expect(driver.put(key, Buffer.from('x')), JSON.stringify(key)).rejects.toThrow(TypeError);
        await expect(driver.putIfAbsent(key, Buffer.from('x')), JSON.stringify(key)).rejects.toThrow(TypeError);
        await expect(driver.get(key), JSON.stringify(key)).rejects.toThrow(TypeError);
        await expect(driver.delete(key), JSON.stringify(key)).rejects.toThrow(TypeError);
        await expect(driver.hasMany(['ok', key]), JSON.stringify(key)).rejects.toThrow(TypeError);
      }
      await expect(driver.listChildren('a')).rejects.toThrow(TypeError);
      await expect(driver.get('ok', { start: 5, end: 2 })).rejects.toThrow(TypeError);
      await driver.close();
      await expect(stat(root)).rejects.toThrow(/ENOENT/);
    });

    it('keys that look like options or shell code are stored literally', async () => {
      const { root, driver } = await fresh();
      const keys = ['-rf', 'a/--help', "q/it's", 'q/$(touch pwned)', 'q/`id`', 'q/a b', 'q/*', 'q/;rm -rf x'];
      for (const key of keys) expect(await driver.putIfAbsent(key, Buffer.from(key)), key).toBe(true);
      for (const key of keys) expect(String(await driver.get(key)), key).toBe(key);
      expect(await driver.hasMany(keys)).toEqual(keys.map(() => true));
      expect(await driver.listChildren('q/')).toEqual(['$(touch pwned)', '*', ';rm -rf x', 'a b', "it's", '`id`'].sort());
      for (const key of keys) await driver.delete(key);
      expect(await driver.hasMany(keys)).toEqual(keys.map(() => false));
      await driver.close();
      expect(await filesUnder(root)).toEqual([]);
      expect(await readdir(base)).not.toContain('pwned');
    });

    it('write-behind: queued chunks are readable at once and on the host after flush()', async () => {
      const { root, driver } = await fresh();
      const chunk = Buffer.from('queued chunk');
      expect(await driver.putIfAbsent('chunks/aa/aa01', chunk)).toBe(true);
      expect((await driver.get('chunks/aa/aa01'))!.equals(chunk)).toBe(true);
      expect(await driver.hasMany(['chunks/aa/aa01', 'chunks/aa/aa02'])).toEqual([true, false]);
      await driver.flush();
      expect((await readFile(path.join(root, 'chunks/aa/aa01'))).equals(chunk)).toBe(true);

      await driver.close();
    });

    it('3,000 concurrent writes over two sessions all land whole (each session empties its own staging)', async () => {
      const { root, driver } = await fresh({ channels: 2 });
      const keys = Array.from({ length: 3000 }, (_, i) => `chunks/${(i % 256).toString(16).padStart(2, '0')}/c${i}`);
      let next = 0;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          for (let i = next++; i < keys.length; i = next++) {
            // Every third object goes the confirmed way (a replace), the rest write-behind.
            if (i % 3 === 0) await driver.put(keys[i]!, Buffer.from(keys[i]!));
            else expect(await driver.putIfAbsent(keys[i]!, Buffer.from(keys[i]!))).toBe(true);
          }
        }),
      );
      await driver.flush();
      await driver.close();
      const files = await filesUnder(root);
      expect(files).toEqual([...keys].sort());
      for (const k of keys.filter((_, i) => i % 97 === 0)) expect(String(await readFile(path.join(root, k)))).toBe(k);
    });

    it('two sessions creating the same new directories at once both land every object (GNU tar loses that race by itself)', async () => {
      const { root, driver } = await fresh({ channels: 2 });
      // Two sessions up before the writes, so the two big batches run side by side.
      await Promise.all([driver.hasMany(['x']), driver.hasMany(['y']), driver.hasMany(['z'])]);
      await new Promise((r) => setTimeout(r, 300));
      const keys: string[] = [];
      for (let round = 0; round < 3; round++) {
        // Queued in one go: a batch of 1 each, then two of 2,000 that both walk the same 256 new directories.
        const part = Array.from({ length: 4002 }, (_, i) => `chunks/r${round}/${(i % 256).toString(16).padStart(2, '0')}/c${i}`);
        keys.push(...part);
        expect(await Promise.all(part.map((k) => driver.putIfAbsent(k, Buffer.from(k))))).toEqual(part.map(() => true));
        await driver.flush();
      }
      await driver.close();
      expect(await filesUnder(root)).toEqual([...keys].sort());
    });

    it('a ref waits for queued chunks: its write fails when one of them failed', async () => {
      const { root, driver } = await fresh();
      // A directory where the chunk's file would go makes the host refuse it whoever runs the test.
      await mkdir(path.join(root, 'chunks', 'cc', 'cc01'), { recursive: true });
      expect(await driver.putIfAbsent('chunks/cc/cc01', Buffer.from('x'))).toBe(true);
      const err = await driver.putIfAbsent('refs/p/a/v1', Buffer.from('{}')).catch((e: unknown) => e);
      expect(isKkError(err)).toBe(true);
      expect((err as Error).message).toMatch(/chunks\/cc\/cc01/);
      await driver.close();
      await expect(stat(path.join(root, 'refs', 'p', 'a', 'v1'))).rejects.toThrow(/ENOENT/);
    });

    it('opens ssh://user@host:port/path?config=.. from the registry', async () => {
      const root = path.join(base, 'via-url');
      const driver = await openDriver(sshd.storeUrl(root));
      expect(driver.name).toBe('ssh');
      expect(driver.capabilities).toEqual({ rangeReads: true, atomicCreate: true, listing: true, deletion: true, batchExists: true });
      if (!('put' in driver)) throw new Error('ssh driver must be writable');
      await driver.put('k', Buffer.from('via url'));
      await driver.close();
      expect(String(await readFile(path.join(root, 'k')))).toBe('via url');
    });

    it('close() ends the ssh processes and removes the control socket directory', async () => {
      const { driver } = await fresh();
      await driver.put('a', Buffer.from('1'));
      const before = await readdir(tmpdir());
      await driver.close();
      await driver.close();
      const after = await readdir(tmpdir());
      expect(after.filter((d) => d.startsWith('kk-ssh-') && !d.startsWith('kk-ssh-driver-') && !d.startsWith('kk-ssh-conformance-')).length).toBeLessThan(
        before.filter((d) => d.startsWith('kk-ssh-') && !d.startsWith('kk-ssh-driver-') && !d.startsWith('kk-ssh-conformance-')).length,
      );
      await expect(driver.get('a')).rejects.toThrow(TypeError);
    });

    it('maps an unreachable host, a refused key, an unknown host key and a path that is a file to KkErrors with a hint', async () => {
      // The control socket directory goes under TMPDIR: a private one shows what is left behind.
      const privateTmp = await mkdtemp(path.join(tmpdir(), 'kk-ssh-tmpdir-'));
      const savedTmp = process.env.TMPDIR;
      process.env.TMPDIR = privateTmp;
      const down = createSshDriver({ ...sshDriverOptionsFromUrl(new URL(sshd.storeUrl('/tmp/x'))), port: 1, connectTimeout: 5 });
      const e1 = await down.get('a').catch((e: unknown) => e);
      if (savedTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = savedTmp;
      expect(isKkError(e1, 'BACKEND')).toBe(true);
      // A failed open leaves no control socket directory behind, even without close().
      expect(await readdir(privateTmp)).toEqual([]);
      await rm(privateTmp, { recursive: true });
      expect((e1 as Error).message).toMatch(/connection failed: .*(refused|port 1)/i);
      expect((e1 as { hint: string }).hint).toMatch(/sshd runs/);

      const keyDir = await mkdtemp(path.join(tmpdir(), 'kk-ssh-key-'));
      const otherKey = path.join(keyDir, 'id_ed25519');
      await new Promise((r) => spawn('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKey]).on('exit', r));
      const refused = createSshDriver({ host: '127.0.0.1', port: sshd.port, user: sshd.user, root: '/tmp/x', identity: otherKey, sshOptions: ['IdentitiesOnly=yes', 'StrictHostKeyChecking=no', 'UserKnownHostsFile=/dev/null'], configFile: '/dev/null' });
      const e2 = await refused.stat('a').catch((e: unknown) => e);
      expect(isKkError(e2, 'AUTH')).toBe(true);
      expect((e2 as { hint: string }).hint).toMatch(/ssh-copy-id/);

      const knownHosts = path.join(keyDir, 'known_hosts');
      await writeFile(knownHosts, '');
      const strict = createSshDriver({ host: '127.0.0.1', port: sshd.port, user: sshd.user, root: '/tmp/x', identity: sshd.keyFile, sshOptions: ['StrictHostKeyChecking=yes', `UserKnownHostsFile=${knownHosts}`], configFile: '/dev/null' });
      const e3 = await strict.stat('a').catch((e: unknown) => e);
      expect(isKkError(e3, 'AUTH')).toBe(true);
      expect((e3 as { hint: string }).hint).toMatch(/accept-new/);

      const notDir = path.join(base, 'a-file');
      await writeFile(notDir, 'x');
      const fileRoot = createSshDriver(sshDriverOptionsFromUrl(new URL(sshd.storeUrl(notDir))));
      const e4 = await fileRoot.get('a').catch((e: unknown) => e);
      expect(isKkError(e4, 'STORE_INVALID')).toBe(true);
      for (const d of [down, refused, strict, fileRoot]) await d.close();
      await rm(keyDir, { recursive: true, force: true });
    });

    it('reports a full disk as DISK_FULL, and the session keeps working', async (ctx) => {
      // A 256 KiB tmpfs as the store: mounting one needs root (CI runs as root).
      const root = path.join(base, 'small-fs');
      await mkdir(root, { recursive: true });
      const mounted = await new Promise<boolean>((r) => spawn('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', root], { stdio: 'ignore' }).on('exit', (c) => r(c === 0)).on('error', () => r(false)));
      if (!mounted) return ctx.skip('mounting a small tmpfs needs root');
      const driver = createSshDriver({ ...sshDriverOptionsFromUrl(new URL(sshd.storeUrl(root))), channels: 1 });
      try {
        const err = await driver.put('big', Buffer.alloc(1024 * 1024, 7)).catch((e: unknown) => e);
        expect(isKkError(err, 'DISK_FULL')).toBe(true);
        expect((err as { hint: string }).hint).toMatch(/free space/);
        const queued = await driver.putIfAbsent('chunks/dd/dd01', Buffer.alloc(1024 * 1024, 8));
        expect(queued).toBe(true);
        expect(isKkError(await driver.flush().catch((e: unknown) => e), 'DISK_FULL')).toBe(true);
        // The same session still answers, and nothing partial is visible under either key.
        expect(await driver.hasMany(['big', 'chunks/dd/dd01'])).toEqual([false, false]);
      } finally {
        await driver.close();
        await new Promise((r) => spawn('umount', [root], { stdio: 'ignore' }).on('exit', r));
      }
    });
  });
});

describe('sshDriverOptionsFromUrl', () => {
  const parse = (url: string) => sshDriverOptionsFromUrl(new URL(url));

  it('reads user, host, port, path and parameters', () => {
    expect(parse('ssh://deploy@build.example:2222/srv/kk%20store?identity=%2Fhome%2Fd%2F.ssh%2Fid&strict_host_key_checking=accept-new&channels=3&fsync=false')).toEqual({
      host: 'build.example',
      user: 'deploy',
      port: 2222,
      root: '/srv/kk store',
      identity: '/home/d/.ssh/id',
      sshOptions: ['StrictHostKeyChecking=accept-new'],
      channels: 3,
      fsync: false,
    });
    expect(parse('ssh://kk-host/srv/kk')).toEqual({ host: 'kk-host', root: '/srv/kk' });
    expect(parse('ssh://[::1]:22/srv/kk')).toEqual({ host: '::1', port: 22, root: '/srv/kk' });
  });

  it('rejects option-like hosts and users, passwords, relative or missing paths and unknown parameters', () => {
    for (const url of [
      'ssh://-oProxyCommand=touch%20x/srv/kk',
      'ssh://-oProxyCommand=x@host/srv/kk',
      'ssh://user:secret@host/srv/kk',
      'ssh://host',
      'ssh://host/srv%0Akk',
      'ssh://host/srv/kk?proxy_command=x',
      'ssh://host/srv/kk?strict_host_key_checking=maybe',
      'ssh://host/srv/kk?channels=0',
    ]) {
      let err: unknown;
      try {
        parse(url);
      } catch (e) {
        err = e;
      }
      expect(isKkError(err, 'CONFIG_INVALID'), url).toBe(true);
    }
    expect(() => createSshDriver({ host: '-oProxyCommand=x', root: '/srv' })).toThrow(TypeError);
    expect(() => createSshDriver({ host: 'h', root: 'relative/path' })).toThrow(TypeError);
    expect(() => createSshDriver({ host: 'h', root: '/srv', sshOptions: ['ProxyCommand touch x'] })).toThrow(TypeError);
  });

  it('builds a driver without connecting until the first call, and a URL shows no secrets', async () => {
    const driver = await openDriver('ssh://nobody@127.0.0.1:1/srv/kk');
    await driver.close();
    expect(describeStoreUrl('ssh://deploy@host:2222/srv/kk?identity=%2Fk')).toBe('ssh://deploy@host:2222/srv/kk?identity=%2Fk');
  });
});
