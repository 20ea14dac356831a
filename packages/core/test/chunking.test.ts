// FastCDC boundaries are a storage format: they must never change for existing stores.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chunkingFor, createHasher, parseSize, type FileHashResult, type Hasher } from '@kk/core';
import { keystream, textBytes, writeRandomFile } from '../../../fixtures/generate.mjs';

let dir: string;
let hasher: Hasher;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kk-cdc-'));
  hasher = createHasher({ threads: 2 });
});
afterAll(async () => {
  await hasher.close();
  await rm(dir, { recursive: true, force: true });
});

async function hash(name: string, data?: Buffer): Promise<FileHashResult> {
  if (data) await writeFile(join(dir, name), data);
  const [r] = await hasher.hashFiles([join(dir, name)], chunkingFor());
  if (!r || !('sha256' in r)) throw new Error('hash failed');
  return r;
}

describe('content-defined chunking', () => {
  it('produces the pinned boundaries for the default parameters (golden: never change these)', async () => {
    writeRandomFile(join(dir, 'golden.bin'), 5 * 1024 * 1024, 'golden');
    const r = await hash('golden.bin');
    expect(r.sha256).toBe('sha256:32a751396bf0de0573fa83570fcc6e58a547195bb602e6392f364641b24a0260');
    expect(r.chunks.map((c) => c[1])).toEqual([609870, 632956, 789280, 568762, 576950, 591371, 571614, 633822, 268255]);
    expect(r.chunks[0]![0]).toBe('sha256:355e6c77628879c460a5061f748d92abe0d536ba0334e06339f544b6c36c5057');
    const t = await hash('golden.txt', textBytes(3 * 1024 * 1024, 'golden-text'));
    expect(t.chunks.map((c) => c[1])).toEqual([524636, 790332, 584169, 569062, 563183, 114346]);
  });

  it('keeps chunk sizes within min..max and resynchronises after an insertion', async () => {
    const c = chunkingFor();
    const base = keystream('resync')(20 * 1024 * 1024);
    const edited = Buffer.concat([base.subarray(0, 7_000_000), Buffer.from('inserted bytes'), base.subarray(7_000_000)]);
    const a = await hash('a.bin', base);
    const b = await hash('b.bin', edited);
    for (const r of [a, b]) {
      r.chunks.slice(0, -1).forEach(([, size]) => {
        expect(size).toBeGreaterThanOrEqual(c.min);
        expect(size).toBeLessThanOrEqual(c.max);
      });
      expect(r.chunks.reduce((s, [, n]) => s + n, 0)).toBe(r.size);
    }
    const inA = new Set(a.chunks.map(([d]) => d));
    const fresh = b.chunks.filter(([d]) => !inA.has(d));
    // Only the chunk(s) around the insertion are new; everything after realigns.
    expect(fresh.length).toBeLessThanOrEqual(2);
    expect(a.chunks.at(-1)).toEqual(b.chunks.at(-1));
  });

  it('hashes empty and tiny files as one chunk or none', async () => {
    const empty = await hash('empty', Buffer.alloc(0));
    expect(empty.chunks).toEqual([]);
    expect(empty.sha256).toBe('sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    const tiny = await hash('tiny', Buffer.from('abc'));
    expect(tiny.chunks).toEqual([['sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', 3]]);
  });

  it('parses sizes', () => {
    expect(parseSize('4MB')).toBe(4 * 1024 * 1024);
    expect(parseSize('512KiB')).toBe(512 * 1024);
    expect(parseSize(1000)).toBe(1000);
    expect(() => parseSize('lots')).toThrow(/cannot read size/);
    expect(chunkingFor(4 * 1024 * 1024)).toMatchObject({ min: 1024 * 1024, avg: 4 * 1024 * 1024, max: 16 * 1024 * 1024 });
  });
});

describe('parallel chunking of one large file', () => {
  it('gives exactly the sequential boundaries, with and without segments meeting in the overrun', async () => {
    writeRandomFile(join(dir, 'large.bin'), 40 * 1024 * 1024 + 12345, 'parallel');
    const [seq] = await hasher.hashFiles([join(dir, 'large.bin')], chunkingFor());
    const variants = [
      createHasher({ threads: 2, segmentBytes: 4 * 1024 * 1024 }),
      createHasher({ threads: 2, segmentBytes: 3 * 1024 * 1024 + 7 }),
      // No overrun: segments never meet, every boundary is continued by the fallback.
      createHasher({ threads: 2, segmentBytes: 5 * 1024 * 1024, overrunBytes: 0 }),
    ];
    try {
      for (const h of variants) {
        const par = await h.hashLargeFile(join(dir, 'large.bin'), chunkingFor());
        expect(par).toEqual(seq);
      }
    } finally {
      await Promise.all(variants.map((h) => h.close()));
    }
  });
});
