// The driver conformance suite: every driver runs it against its real backend. It reads the
// driver's capabilities and skips, with the reason shown, what the driver does not claim.
import { randomBytes } from 'node:crypto';
import { brotliCompressSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestContext } from 'vitest';
import { ENCODING_BROTLI, ENCODING_RAW, createHasher, isPruneDriver, isWriteDriver, sha256Digest } from '@kk/core';
import type { Driver, DriverCapabilities, ObjectInfo, PruneDriver, WriteDriver } from '@kk/core';

export interface DriverUnderTest {
  driver: Driver;
  /** Runs after the driver is closed: stop the backend, remove its files. */
  cleanup?: () => Promise<void>;
}

export function runDriverConformance(name: string, setup: () => Promise<DriverUnderTest>): void {
  describe(`driver conformance: ${name}`, () => {
    let subject: DriverUnderTest | undefined;
    // One namespace per run, one prefix per test: tests share a backend but never a key.
    const run = `conformance-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
    let nextPrefix = 0;
    const prefix = () => `${run}/t${nextPrefix++}/`;

    beforeAll(async () => {
      subject = await setup();
    });
    afterAll(async () => {
      await subject?.driver.close();
      await subject?.cleanup?.();
    });

    const reader = (): Driver => {
      if (!subject) throw new Error('driver setup failed');
      return subject.driver;
    };
    const writer = (ctx: TestContext, ...needs: (keyof DriverCapabilities)[]): WriteDriver => {
      const d = reader();
      if (!isWriteDriver(d)) return ctx.skip(`${name} is read-only (no put)`);
      for (const cap of needs) if (!d.capabilities[cap]) return ctx.skip(`${name} does not claim capabilities.${cap}`);
      return d;
    };
    const pruner = (ctx: TestContext, ...needs: (keyof DriverCapabilities)[]): PruneDriver => {
      const d = writer(ctx, 'deletion', ...needs);
      if (!isPruneDriver(d)) throw new Error(`${name} claims capabilities.deletion but has no delete()`);
      return d;
    };

    it('get and stat of a missing key resolve undefined', async () => {
      const p = prefix();
      expect(await reader().get(`${p}missing`)).toBeUndefined();
      expect(await reader().get(`${p}missing/deeper`)).toBeUndefined();
      expect(await reader().stat(`${p}missing`)).toBeUndefined();
    });

    it('carries raw and brotli chunk objects byte-exactly (no transport decoding), and they decode to their digest', async (ctx) => {
      const d = writer(ctx);
      const p = prefix();
      const raw = Buffer.from('kk chunk payload '.repeat(4000));
      const objects = [
        Buffer.concat([Buffer.from([ENCODING_RAW]), raw]),
        Buffer.concat([Buffer.from([ENCODING_BROTLI]), brotliCompressSync(raw)]),
      ];
      const hasher = createHasher({ threads: 1 });
      try {
        for (const [i, obj] of objects.entries()) {
          await d.put(`${p}chunk${i}`, obj);
          const back = (await d.get(`${p}chunk${i}`))!;
          expect(back.equals(obj)).toBe(true);
          const decoded = await hasher.decodeChunk(back, sha256Digest(raw), raw.length);
          expect(decoded.ok && Buffer.from(decoded.raw).equals(raw)).toBe(true);
        }
      } finally {
        await hasher.close();
      }
    });

    it('put/get round-trips 0 bytes, 1 byte, 3 MiB of random bytes and a nested key', async (ctx) => {
      const d = writer(ctx);
      const p = prefix();
      const cases: [string, Buffer][] = [
        [`${p}empty`, Buffer.alloc(0)],
        [`${p}one`, Buffer.from([0xa5])],
        [`${p}big`, randomBytes(3 * 1024 * 1024)],
        [`${p}a/b/c/d/nested`, randomBytes(777)],
      ];
      for (const [key, data] of cases) await d.put(key, data);
      for (const [key, data] of cases) {
        const got = await d.get(key);
        expect(Buffer.isBuffer(got), key).toBe(true);
        expect(got!.length, key).toBe(data.length);
        expect(got!.equals(data), key).toBe(true);
      }
    });

    it('put replaces an existing object', async (ctx) => {
      const d = writer(ctx);
      const key = `${prefix()}obj`;
      await d.put(key, randomBytes(4096));
      const second = randomBytes(100);
      await d.put(key, second);
      expect((await d.get(key))!.equals(second)).toBe(true);
    });

    it('putIfAbsent creates once and leaves the original bytes alone', async (ctx) => {
      const d = writer(ctx);
      const key = `${prefix()}obj`;
      const first = randomBytes(300);
      expect(await d.putIfAbsent(key, first)).toBe(true);
      expect(await d.putIfAbsent(key, randomBytes(500))).toBe(false);
      expect((await d.get(key))!.equals(first)).toBe(true);
    });

    it('20 concurrent putIfAbsent on one key: exactly one wins and its bytes are stored', async (ctx) => {
      const d = writer(ctx, 'atomicCreate');
      const key = `${prefix()}contended`;
      const contents = Array.from({ length: 20 }, () => randomBytes(64 * 1024));
      const results = await Promise.all(contents.map((data) => d.putIfAbsent(key, data)));
      const winners = results.flatMap((created, i) => (created ? [i] : []));
      expect(winners).toHaveLength(1);
      expect((await d.get(key))!.equals(contents[winners[0]!]!)).toBe(true);
    });

    it('range reads are inclusive and clamp to the object end', async (ctx) => {
      // Every driver honours ranges; `rangeReads` only says they are cheap.
      const d = writer(ctx);
      const p = prefix();
      const data = randomBytes(1000);
      await d.put(`${p}obj`, data);
      const range = async (start: number, end: number) => (await d.get(`${p}obj`, { start, end }))!;
      expect((await range(0, 0)).equals(data.subarray(0, 1))).toBe(true);
      expect((await range(10, 19)).equals(data.subarray(10, 20))).toBe(true);
      expect((await range(0, 999)).equals(data)).toBe(true);
      expect((await range(990, 5000)).equals(data.subarray(990))).toBe(true);
      expect((await range(999, 999)).equals(data.subarray(999))).toBe(true);
      expect((await range(1000, 1100)).length).toBe(0);
      expect(await d.get(`${p}missing`, { start: 0, end: 10 })).toBeUndefined();
    });

    it('stat reports size and a recent mtime', async (ctx) => {
      const d = writer(ctx);
      const key = `${prefix()}obj`;
      await d.put(key, randomBytes(1234));
      const info = await d.stat(key);
      expect(info?.key).toBe(key);
      expect(info?.size).toBe(1234);
      expect(Math.abs(info!.mtime - Date.now())).toBeLessThan(60_000);
      expect(await d.stat(`${prefix()}missing`)).toBeUndefined();
    });

    it('hasMany answers 1500 keys of mixed presence in order', async (ctx) => {
      const d = writer(ctx);
      const p = prefix();
      const keys = Array.from({ length: 1500 }, (_, i) => `${p}${(i % 16).toString(16)}/k${i}`);
      const present = keys.map((_, i) => i % 3 !== 1);
      await inBatches(
        keys.filter((_, i) => present[i]),
        32,
        (key) => d.put(key, Buffer.from(key)),
      );
      expect(await d.hasMany(keys)).toEqual(present);
      expect(await d.hasMany([keys[1]!, keys[0]!, keys[0]!])).toEqual([false, true, true]);
      expect(await d.hasMany([])).toEqual([]);
    });

    it('list yields exactly the objects under a prefix, with sizes', async (ctx) => {
      const d = writer(ctx, 'listing');
      const p = prefix();
      const objects: Record<string, number> = {
        [`${p}chunks/ab/ab01`]: 1,
        [`${p}chunks/ab/ab02`]: 20,
        [`${p}chunks/ab/deeper/ab03`]: 300,
        [`${p}chunks/abc/abc1`]: 4,
        [`${p}chunks/abd`]: 5,
        [`${p}other/x`]: 6,
      };
      for (const [key, size] of Object.entries(objects)) await d.put(key, randomBytes(size));
      const listed = async (pre: string) => sizes(await collect(d.list(pre)));
      const pick = (...names: string[]) => Object.fromEntries(names.map((n) => [`${p}${n}`, objects[`${p}${n}`]]));

      expect(await listed(`${p}chunks/ab/`)).toEqual(pick('chunks/ab/ab01', 'chunks/ab/ab02', 'chunks/ab/deeper/ab03'));
      expect(await listed(`${p}chunks/ab`)).toEqual(
        pick('chunks/ab/ab01', 'chunks/ab/ab02', 'chunks/ab/deeper/ab03', 'chunks/abc/abc1', 'chunks/abd'),
      );
      expect(await listed(`${p}chunks/ab/ab0`)).toEqual(pick('chunks/ab/ab01', 'chunks/ab/ab02'));
      expect(await listed(`${p}chunks/ab/ab01`)).toEqual(pick('chunks/ab/ab01'));
      expect(await listed(p)).toEqual(objects);
      expect(await listed(`${p}missing/`)).toEqual({});
      for (const info of await collect(d.list(p))) expect(Math.abs(info.mtime - Date.now())).toBeLessThan(60_000);
    });

    it('listChildren returns sorted unique immediate children', async (ctx) => {
      const d = writer(ctx, 'listing');
      const p = prefix();
      for (const key of ['d/c/z/w', 'd/b', 'd/a/y', 'd/a/x', 'e']) await d.put(`${p}${key}`, Buffer.from(key));
      expect(await d.listChildren(p)).toEqual(['d', 'e']);
      expect(await d.listChildren(`${p}d/`)).toEqual(['a', 'b', 'c']);
      expect(await d.listChildren(`${p}d/a/`)).toEqual(['x', 'y']);
      expect(await d.listChildren(`${p}d/c/z/`)).toEqual(['w']);
      expect(await d.listChildren(`${p}missing/`)).toEqual([]);
    });

    it('delete removes the object, is idempotent and leaves siblings alone', async (ctx) => {
      const d = pruner(ctx);
      const p = prefix();
      const sibling = randomBytes(10);
      await d.put(`${p}a/b/gone`, randomBytes(10));
      await d.put(`${p}kept`, sibling);
      await d.delete(`${p}a/b/gone`);
      expect(await d.get(`${p}a/b/gone`)).toBeUndefined();
      expect(await d.stat(`${p}a/b/gone`)).toBeUndefined();
      expect(await d.hasMany([`${p}a/b/gone`, `${p}kept`])).toEqual([false, true]);
      await d.delete(`${p}a/b/gone`);
      await d.delete(`${p}never/existed`);
      expect((await d.get(`${p}kept`))!.equals(sibling)).toBe(true);
      if (d.capabilities.listing) {
        expect((await collect(d.list(p))).map((o) => o.key)).toEqual([`${p}kept`]);
        expect(await d.listChildren(p)).toEqual(['kept']);
      }
    });

    it('concurrent puts of one key leave one written value intact, never a mix', async (ctx) => {
      const d = writer(ctx);
      const key = `${prefix()}raced`;
      const contents = Array.from({ length: 10 }, () => randomBytes(256 * 1024));
      const isOneOf = (got: Buffer | undefined) => got === undefined || contents.some((c) => c.equals(got));
      let writing = true;
      const observed: boolean[] = [];
      const readers = Array.from({ length: 3 }, async () => {
        while (writing) observed.push(isOneOf(await d.get(key)));
      });
      await Promise.all(contents.map((data) => d.put(key, data)));
      writing = false;
      await Promise.all(readers);
      const final = await d.get(key);
      expect(final).toBeDefined();
      expect(isOneOf(final)).toBe(true);
      expect(observed.every(Boolean)).toBe(true);
    });
  });
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

function sizes(infos: ObjectInfo[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const info of infos) {
    expect(out, `${info.key} listed twice`).not.toHaveProperty([info.key]);
    out[info.key] = info.size;
  }
  return out;
}

async function inBatches<T>(items: T[], size: number, fn: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}
