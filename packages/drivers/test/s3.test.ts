import { randomBytes } from 'node:crypto';
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isKkError } from '@kk/core';
import { runDriverConformance, s3rverUnavailable, startS3rver } from '@kk/testkit';
import type { S3rverBackend } from '@kk/testkit';
import { openDriver } from '../src/index.js';
import { createS3Driver, s3DriverOptionsFromUrl, type S3DriverOptions } from '../src/s3.js';

const unavailable = s3rverUnavailable();
if (unavailable && process.env.CI) throw new Error(`CI must run the s3 driver tests: ${unavailable}`);

/** Counts the SDK commands a driver sends, by name (`PutObjectCommand`...). */
function countRequests(client: S3Client): Map<string, number> {
  const counts = new Map<string, number>();
  client.middlewareStack.add(
    (next, context) => async (args) => {
      counts.set(context.commandName!, (counts.get(context.commandName!) ?? 0) + 1);
      return next(args);
    },
    { step: 'initialize' },
  );
  return counts;
}

async function inBatches<T>(items: T[], size: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

describe.skipIf(!!unavailable)(`s3 driver against s3rver${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  runDriverConformance('s3 (s3rver)', async () => {
    const s3 = await startS3rver();
    try {
      return { driver: createS3Driver(s3.driverOptions('conformance')), cleanup: () => s3.stop() };
    } catch (err) {
      await s3.stop();
      throw err;
    }
  });

  describe('s3 driver', () => {
    let s3: S3rverBackend;
    let n = 0;
    /** A driver on a fresh prefix of the shared bucket, and its request counts. */
    const fresh = (extra: Partial<S3DriverOptions> = {}) => {
      const driver = createS3Driver({ ...s3.driverOptions(`case${n++}`), ...extra });
      return { driver, requests: countRequests(driver.client) };
    };
    beforeAll(async () => {
      s3 = await startS3rver();
    });
    afterAll(async () => {
      await s3?.stop();
    });

    it('stores DESIGN 3 keys verbatim under its prefix with the exact bytes, and sees nothing outside it', async () => {
      const { driver } = fresh({ prefix: 'deep/store' });
      const other = fresh({ prefix: 'deep/store2' }).driver;
      const data = Buffer.from([0, 1, 2, 254, 255]);
      await driver.put('chunks/ab/abcd', data);
      await other.put('chunks/ab/abcd', Buffer.from('other'));
      const raw = await driver.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'deep/store/chunks/ab/abcd' }));
      expect(Buffer.from(await raw.Body!.transformToByteArray()).equals(data)).toBe(true);
      await driver.put('refs/p/a/1.0.0+build', Buffer.from('{}'));
      const all = await driver.client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'deep/' }));
      expect((all.Contents ?? []).map((o) => o.Key).sort()).toEqual(['deep/store/chunks/ab/abcd', 'deep/store/refs/p/a/1.0.0+build', 'deep/store2/chunks/ab/abcd']);
      const listed = [];
      for await (const o of driver.list('')) listed.push(o.key);
      expect(listed.sort()).toEqual(['chunks/ab/abcd', 'refs/p/a/1.0.0+build']);
      expect(await driver.listChildren('')).toEqual(['chunks', 'refs']);
      await driver.close();
      await other.close();
    });

    it('rejects unsafe keys with a TypeError before any request', async () => {
      const { driver, requests } = fresh();
      for (const key of ['../x', '/etc/x', 'a//b', 'a\\b', 'a/./b', 'a/..', 'a\0b', '', 'a/', '.tmp-x']) {
        await expect(driver.put(key, Buffer.from('x')), key).rejects.toThrow(TypeError);
        await expect(driver.putIfAbsent(key, Buffer.from('x')), key).rejects.toThrow(TypeError);
        await expect(driver.get(key), key).rejects.toThrow(TypeError);
        await expect(driver.delete(key), key).rejects.toThrow(TypeError);
        await expect(driver.hasMany(['ok', key]), key).rejects.toThrow(TypeError);
      }
      await expect(driver.listChildren('a')).rejects.toThrow(TypeError);
      await expect(driver.get('ok', { start: 5, end: 2 })).rejects.toThrow(TypeError);
      expect([...requests.values()].reduce((a, b) => a + b, 0)).toBe(0);
      await driver.close();
    });

    it('hasMany answers 300 keys of one directory with one LIST and no HEAD, and lone keys with one HEAD each', async () => {
      const { driver, requests } = fresh();
      const keys = Array.from({ length: 300 }, (_, i) => `chunks/ab/ab${i.toString(16).padStart(6, '0')}`);
      await inBatches(keys.filter((_, i) => i % 2 === 0), 32, (k) => driver.put(k, Buffer.from(k)));
      await driver.put('refs/p/a/v1', Buffer.from('{}'));
      requests.clear();
      const expected = keys.map((_, i) => i % 2 === 0);
      expect(await driver.hasMany(keys)).toEqual(expected);
      expect(Object.fromEntries(requests)).toEqual({ ListObjectsV2Command: 1 });

      requests.clear();
      expect(await driver.hasMany(['refs/p/a/v1', 'refs/p/b/v1', 'chunks/cd/cdef'])).toEqual([true, false, false]);
      expect(Object.fromEntries(requests)).toEqual({ HeadObjectCommand: 3 });
      await driver.close();
    });

    it('hasMany stops listing a big directory once HEADs would be cheaper', async () => {
      const { driver, requests } = fresh();
      const keys = Array.from({ length: 1200 }, (_, i) => `chunks/ef/ef${i.toString().padStart(6, '0')}`);
      await inBatches(keys, 64, (k) => driver.put(k, Buffer.alloc(0)));
      requests.clear();
      // The range from the first to the last key spans two pages: one LIST decides the first
      // key, then a HEAD for the last beats a second page.
      const asked = [keys[0]!, 'chunks/ef/ef000500x', keys[1199]!];
      expect(await driver.hasMany(asked)).toEqual([true, false, true]);
      expect(Object.fromEntries(requests)).toEqual({ ListObjectsV2Command: 1, HeadObjectCommand: 1 });
      await driver.close();
    });

    it('coalesces concurrent deletes into one DeleteObjects request', async () => {
      const { driver, requests } = fresh();
      const keys = Array.from({ length: 40 }, (_, i) => `chunks/00/k${i}`);
      await inBatches(keys, 40, (k) => driver.put(k, Buffer.from(k)));
      requests.clear();
      await Promise.all([...keys, keys[0]!, 'chunks/00/never-existed'].map((k) => driver.delete(k)));
      expect(Object.fromEntries(requests)).toEqual({ DeleteObjectsCommand: 1 });
      expect(await driver.listChildren('chunks/00/')).toEqual([]);
      requests.clear();
      await driver.delete('chunks/00/k0');
      expect(Object.fromEntries(requests)).toEqual({ DeleteObjectCommand: 1 });
      await driver.close();
    });

    it('with conditional writes, putIfAbsent sends If-None-Match: * and reads 412 as "already there", retrying a 409', async () => {
      // s3rver ignores If-None-Match, so the backend's answers are stood in for here.
      const { driver } = fresh({ conditionalWrites: true });
      expect(driver.capabilities.atomicCreate).toBe(true);
      const answers = [409, 201, 412];
      const seen: (string | undefined)[] = [];
      driver.client.middlewareStack.add(
        (next) => async (args) => {
          const request = args.request as { method: string; headers: Record<string, string> };
          if (request.method !== 'PUT') return next(args);
          seen.push(request.headers['if-none-match']);
          const status = answers.shift();
          if (status === 201) return next(args);
          throw Object.assign(new Error(`HTTP ${status}`), { name: status === 412 ? 'PreconditionFailed' : 'ConditionalRequestConflict', $metadata: { httpStatusCode: status } });
        },
        { step: 'finalizeRequest' },
      );
      expect(await driver.putIfAbsent('refs/p/a/v1', Buffer.from('first'))).toBe(true);
      expect(await driver.putIfAbsent('refs/p/a/v1', Buffer.from('second'))).toBe(false);
      expect(seen).toEqual(['*', '*', '*']);
      expect(String(await driver.get('refs/p/a/v1'))).toBe('first');
      await driver.close();
    });

    it('maps a missing bucket, bad credentials and an unreachable endpoint to KkErrors with a hint', async () => {
      const noBucket = createS3Driver({ ...s3.driverOptions(), bucket: 'no-such-bucket' });
      const e1 = await noBucket.get('kk-store.json').catch((e: unknown) => e);
      expect(isKkError(e1, 'BACKEND')).toBe(true);
      expect((e1 as { hint: string }).hint).toMatch(/create the bucket "no-such-bucket"/);

      // s3rver checks the access key id (not SigV4 signatures).
      const badKey = createS3Driver({ ...s3.driverOptions(), credentials: { accessKeyId: 'NO-SUCH-KEY', secretAccessKey: 'x' } });
      const e2 = await badKey.put('x/y', Buffer.from('1')).catch((e: unknown) => e);
      expect(isKkError(e2, 'AUTH')).toBe(true);
      expect((e2 as Error).message).toMatch(/InvalidAccessKeyId/);

      const down = createS3Driver({ ...s3.driverOptions(), endpoint: 'http://127.0.0.1:1', maxAttempts: 1 });
      const e3 = await down.stat('x/y').catch((e: unknown) => e);
      expect(isKkError(e3, 'BACKEND')).toBe(true);
      expect((e3 as Error).cause).toBeInstanceOf(Error);
      for (const d of [noBucket, badKey, down]) await d.close();
    });

    it('opens s3://bucket/prefix?endpoint=..&region=.. from the registry, credentials from the environment', async () => {
      const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
      process.env.AWS_ACCESS_KEY_ID = s3.credentials.accessKeyId;
      process.env.AWS_SECRET_ACCESS_KEY = s3.credentials.secretAccessKey;
      try {
        const driver = await openDriver(s3.storeUrl('via/url'));
        expect(driver.name).toBe('s3');
        expect(driver.capabilities.atomicCreate).toBe(false);
        if (!('put' in driver)) throw new Error('s3 driver must be writable');
        await driver.put('k', Buffer.from('via url'));
        const raw = await createS3Driver(s3.driverOptions()).get('via/url/k');
        expect(String(raw)).toBe('via url');
        await driver.close();
      } finally {
        process.env.AWS_ACCESS_KEY_ID = saved.id;
        process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
        if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
        if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      }
    });

    it('stop() kills s3rver and is idempotent', async () => {
      const other = await startS3rver();
      const driver = createS3Driver({ ...other.driverOptions(), maxAttempts: 1 });
      await driver.put('a', Buffer.from('1'));
      await other.stop();
      await other.stop();
      expect(isKkError(await driver.get('a').catch((e: unknown) => e), 'BACKEND')).toBe(true);
      await driver.close();
    });
  });
});

describe('s3DriverOptionsFromUrl', () => {
  const parse = (url: string) => s3DriverOptionsFromUrl(new URL(url));

  it('reads bucket, prefix and parameters', () => {
    expect(parse('s3://my-bucket/kk/store/?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1&path_style=true')).toEqual({
      bucket: 'my-bucket',
      prefix: 'kk/store',
      endpoint: 'http://127.0.0.1:9000',
      region: 'eu-west-1',
      pathStyle: true,
    });
    expect(parse('s3://b')).toEqual({ bucket: 'b' });
    expect(parse('s3://b/p?conditional_writes=false&atomic_puts=0&delimiter_listing=no&path_style=false')).toEqual({
      bucket: 'b',
      prefix: 'p',
      conditionalWrites: false,
      atomicPuts: false,
      delimiterListing: false,
      pathStyle: false,
    });
  });

  it('rejects a URL without a bucket, with credentials, a port, a bad prefix or an unknown parameter', () => {
    for (const url of [
      's3:///prefix',
      's3://key:secret@bucket/p',
      's3://bucket:9000/p',
      's3://bucket/a//b',
      's3://bucket/a%5Cb',
      's3://bucket/p?endpoint=127.0.0.1:9000',
      's3://bucket/p?path_style=maybe',
      's3://bucket/p?secret_key=x',
    ]) {
      let err: unknown;
      try {
        parse(url);
      } catch (e) {
        err = e;
      }
      expect(isKkError(err, 'CONFIG_INVALID'), url).toBe(true);
    }
  });

  it('builds a driver without network access until the first call', async () => {
    const driver = await openDriver('s3://bucket/p?endpoint=http%3A%2F%2F127.0.0.1%3A1&region=us-east-1');
    expect(driver.capabilities).toEqual({ rangeReads: true, atomicCreate: true, listing: true, deletion: true, batchExists: true });
    await driver.close();
    await driver.close();
  });
});
