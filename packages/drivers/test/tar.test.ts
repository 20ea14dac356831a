import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isKkError } from '@kk/core';
import { runDriverConformance } from '@kk/testkit';
import { openDriver } from '../src/index.js';
import { createTarDriver } from '../src/tar-store.js';

runDriverConformance('tar', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'kk-tar-conf-'));
  return { driver: await createTarDriver({ file: path.join(dir, 'store.tar') }), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

async function collectKeys(items: AsyncIterable<{ key: string }>): Promise<string[]> {
  const out: string[] = [];
  for await (const o of items) out.push(o.key);
  return out;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** One tar entry, written by hand so tests can make what no honest tool would. */
function entry(name: string, data: Buffer = Buffer.alloc(0), type = '0', link = ''): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 'utf8');
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write(type, 156);
  h.write(link, 157);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return Buffer.concat([h, data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

/** A valid layout holding one tagged kk object whose bytes are `data`. */
function layout(data: Buffer, extra: Buffer[] = [], opts: { badDigest?: boolean } = {}): Buffer {
  const empty = Buffer.from('{}');
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: 'application/vnd.kk.object.v1',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: `sha256:${sha(empty)}`, size: 2 },
    layers: [{ mediaType: 'application/octet-stream', digest: `sha256:${sha(data)}`, size: data.length }],
    annotations: { 'vnd.kk.key': 'objects/x' },
  }));
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha(manifest)}`, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'k_objects_sx' } }] }));
  const stored = opts.badDigest ? Buffer.from(data).fill(0x41, 0, 1) : data;
  return Buffer.concat([
    entry('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}')),
    entry('blobs/', undefined, '5'),
    entry('blobs/sha256/', undefined, '5'),
    entry(`blobs/sha256/${sha(empty)}`, empty),
    entry(`blobs/sha256/${sha(data)}`, stored),
    entry(`blobs/sha256/${sha(manifest)}`, manifest),
    ...extra,
    entry('index.json', index),
    Buffer.alloc(1024),
  ]);
}

describe('tar store', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kk-tar-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  let n = 0;
  const file = () => path.join(dir, `case${n++}`, 'store.tar');

  it('reads a hand-made layout by offsets, and openDriver maps tar:///path to it', async () => {
    const f = file();
    await rm(path.dirname(f), { recursive: true, force: true });
    await import('node:fs/promises').then((fs) => fs.mkdir(path.dirname(f)));
    const data = randomBytes(3000);
    await writeFile(f, layout(data));
    const d = await openDriver(`tar://${f}`);
    try {
      expect((await d.get('objects/x'))!.equals(data)).toBe(true);
      expect((await d.get('objects/x', { start: 10, end: 19 }))!.equals(data.subarray(10, 20))).toBe(true);
      expect(await d.listChildren('')).toEqual(['objects']);
    } finally {
      await d.close();
    }
  });

  describe('refuses hostile archives with a clear error and writes nothing', () => {
    const data = randomBytes(2000);
    const cases: [string, () => Buffer, RegExp][] = [
      ['a path traversal name', () => layout(data, [entry('../../evil', Buffer.from('x'))]), /escape the archive root/],
      ['an absolute name', () => layout(data, [entry('/tmp/evil', Buffer.from('x'))]), /escape the archive root/],
      ['a traversal inside blobs/', () => layout(data, [entry('blobs/sha256/../../../evil', Buffer.from('x'))]), /escape the archive root/],
      ['a symlink entry', () => layout(data, [entry('blobs/sha256/link', undefined, '2', '/etc/passwd')]), /symbolic link/],
      ['a hardlink entry', () => layout(data, [entry(`blobs/sha256/${'0'.repeat(64)}`, undefined, '1', '/etc/passwd')]), /hard link/],
      ['a duplicate blob name', () => layout(data, [entry(`blobs/sha256/${sha(data)}`, data)]), /appears twice/],
      ['an unknown name', () => layout(data, [entry('evil.sh', Buffer.from('#!/bin/sh'))]), /not part of an OCI layout/],
      ['a truncated blob', () => layout(data).subarray(0, 512 * 6 + 700), /truncated/],
    ];
    for (const [what, make, message] of cases) {
      it(what, async () => {
        const f = file();
        await import('node:fs/promises').then((fs) => fs.mkdir(path.dirname(f)));
        await writeFile(f, make());
        const before = await readdir(dir, { recursive: true });
        const err = await createTarDriver({ file: f }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(isKkError(err), String(err)).toBe(true);
        expect((err as Error).message).toMatch(message);
        expect(await readdir(dir, { recursive: true })).toEqual(before);
        await expect(stat(path.join(dir, '..', 'evil'))).rejects.toThrow();
      });
    }

    it('a blob whose bytes do not match its digest: CHUNK_CORRUPT on read', async () => {
      const f = file();
      await import('node:fs/promises').then((fs) => fs.mkdir(path.dirname(f)));
      await writeFile(f, layout(data, [], { badDigest: true }));
      const d = await createTarDriver({ file: f });
      try {
        const err = await d.get('objects/x').catch((e: unknown) => e);
        expect(isKkError(err, 'CHUNK_CORRUPT'), String(err)).toBe(true);
      } finally {
        await d.close();
      }
    });
  });

  it('a key too long for a tag gets a hashed tag and still lists under its own name', async () => {
    const d = await createTarDriver({ file: file() });
    const key = `server/${'x'.repeat(150)}/state`;
    await d.put(key, Buffer.from('long'));
    expect((await d.get(key))!.toString()).toBe('long');
    expect(await d.listChildren('server/')).toEqual(['x'.repeat(150)]);
    expect((await collectKeys(d.list('server/')))).toEqual([key]);
    expect(await d.hasMany([key, `${key}2`])).toEqual([true, false]);
    await d.close();
  });

  it('an interrupted append is cut off: readers see the last index, the next writer truncates the tail', async () => {
    const f = file();
    const d = await createTarDriver({ file: f });
    await d.put('objects/a', Buffer.from('first'));
    await d.close();
    const committed = (await stat(f)).size;
    // A writer that died mid-blob: a header and half its data after the end blocks' place.
    const half = entry(`blobs/sha256/${'ab'.repeat(32)}`, randomBytes(5000)).subarray(0, 3000);
    await writeFile(f, Buffer.concat([(await readFile(f)).subarray(0, committed - 1024), half]));
    const r = await createTarDriver({ file: f, readOnly: true });
    expect((await r.get('objects/a'))!.toString()).toBe('first');
    await r.close();
    const w = await createTarDriver({ file: f });
    await w.put('objects/b', Buffer.from('second'));
    await w.close();
    const again = await createTarDriver({ file: f });
    expect((await again.get('objects/a'))!.toString()).toBe('first');
    expect((await again.get('objects/b'))!.toString()).toBe('second');
    await again.close();
    expect((await readFile(f)).includes(half.subarray(0, 100))).toBe(false);
  });

  it('a second writer gets LOCKED while the first holds the lock file; a dead holder is taken over', async () => {
    const f = file();
    const a = await createTarDriver({ file: f });
    await a.put('objects/a', Buffer.from('a'));
    const b = await createTarDriver({ file: f });
    const err = await b.put('objects/b', Buffer.from('b')).catch((e: unknown) => e);
    expect(isKkError(err, 'LOCKED'), String(err)).toBe(true);
    await a.close();
    await b.put('objects/b', Buffer.from('b'));
    await b.close();
    await writeFile(`${f}.lock`, JSON.stringify({ pid: 2 ** 22 + 12345, host: (await import('node:os')).hostname() }));
    const c = await createTarDriver({ file: f });
    await c.put('objects/c', Buffer.from('c'));
    await c.close();
    const r = await createTarDriver({ file: f, readOnly: true });
    expect(await r.listChildren('objects/')).toEqual(['a', 'b', 'c']);
    await r.close();
  });

  it('deleting most of the archive compacts it into a new file on close', async () => {
    const f = file();
    const d = await createTarDriver({ file: f });
    const keep = randomBytes(100_000);
    await d.put('objects/keep', keep);
    for (let i = 0; i < 8; i++) await d.put(`objects/big${i}`, randomBytes(300_000));
    await d.close();
    const full = (await stat(f)).size;
    const e = await createTarDriver({ file: f });
    for (let i = 0; i < 8; i++) await e.delete(`objects/big${i}`);
    await e.close();
    const small = (await stat(f)).size;
    expect(small).toBeLessThan(full / 4);
    const r = await createTarDriver({ file: f, readOnly: true });
    expect((await r.get('objects/keep'))!.equals(keep)).toBe(true);
    expect(await r.listChildren('objects/')).toEqual(['keep']);
    await r.close();
    expect((await readdir(path.dirname(f))).sort()).toEqual(['store.tar']);
  });
});
