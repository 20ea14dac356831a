// Issue 15 acceptance 3, the http store's batch paths against a real kk server over a real
// socket: the driver's getMany fetches chunks through the framed batch GET (missing ones as
// absent, other keys one by one), falls back to single GETs against a server without the batch
// route (an older server, here a real server behind a proxy that answers that route 404), and a
// chunk PUT is verified against its digest while it arrives (raw objects) or in the pool
// (compressed ones): a wrong byte is CHUNK_CORRUPT and nothing is stored.
import { randomBytes } from 'node:crypto';
import { createServer, request, type Server } from 'node:http';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliCompressSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chunkKey, isKkError, packKey, sha256Digest, type Digest } from '@kk/core';
import { createHttpDriver } from '@kk/drivers/http';
import { startServer, type RunningServer } from '@kk/server';

const ADMIN = `admin-${randomBytes(16).toString('hex')}`;
let root: string;
let server: RunningServer;
let proxy: Server;
let proxyUrl: string;
let batchCalls = 0;

/** A raw chunk object (header byte 0, then the chunk) and its digest. */
function rawObject(size: number): { digest: Digest; object: Buffer; raw: Buffer } {
  const raw = randomBytes(size);
  return { digest: sha256Digest(raw), object: Buffer.concat([Buffer.from([0]), raw]), raw };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'kk-http-batch-'));
  server = await startServer({ store: join(root, 'store'), listen: '127.0.0.1:0', adminToken: ADMIN, log: false, config: { hasherThreads: 1 } });
  const target = new URL(server.url);
  // "An older server": everything passes through except the batch route, which is unknown to it.
  proxy = createServer((req, res) => {
    if (req.url?.endsWith('/chunks/batch')) {
      batchCalls++;
      req.resume();
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'NOT_FOUND', message: 'no such route' } }));
      return;
    }
    const up = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode!, r.headers);
      r.pipe(res);
    });
    req.pipe(up);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  proxyUrl = `http://127.0.0.1:${(proxy.address() as { port: number }).port}`;
});
afterAll(async () => {
  await new Promise((r) => proxy?.close(r));
  await server?.close();
  await rm(root, { recursive: true, force: true });
});

describe('http store batch GET', () => {
  it('getMany returns every chunk byte-exactly in order, a missing one as absent, other keys too', async () => {
    const d = createHttpDriver({ url: server.url, token: ADMIN });
    try {
      // 1,200 chunks: two batch requests (1,000 per request), from 1 byte to 200 KiB.
      const chunks = Array.from({ length: 1200 }, (_, i) => rawObject(i % 50 === 0 ? 200 * 1024 : 1 + (i % 97)));
      for (let i = 0; i < chunks.length; i += 50) await Promise.all(chunks.slice(i, i + 50).map((c) => d.putIfAbsent(chunkKey(c.digest), c.object)));
      const missing = chunkKey(sha256Digest(Buffer.from('never stored')));
      const keys = [...chunks.map((c) => chunkKey(c.digest)), missing, 'kk-store.json'];
      const got = await d.getMany(keys);
      expect(got).toHaveLength(keys.length);
      chunks.forEach((c, i) => expect(got[i]?.equals(c.object), `chunk ${i}`).toBe(true));
      expect(got[chunks.length]).toBeUndefined();
      expect(JSON.parse(got[chunks.length + 1]!.toString('utf8'))).toHaveProperty('chunking');
      // What the server stored is what was sent.
      const hex = chunks[3]!.digest.slice(7);
      expect((await readFile(join(root, 'store', 'chunks', hex.slice(0, 2), hex))).equals(chunks[3]!.object)).toBe(true);
    } finally {
      await d.close();
    }
  });

  it('a server without the batch route: single GETs, asked once', async () => {
    const d = createHttpDriver({ url: proxyUrl, token: ADMIN });
    try {
      const chunks = Array.from({ length: 20 }, (_, i) => rawObject(10 + i));
      await Promise.all(chunks.map((c) => d.putIfAbsent(chunkKey(c.digest), c.object)));
      const before = batchCalls;
      const first = await d.getMany(chunks.slice(0, 10).map((c) => chunkKey(c.digest)));
      const second = await d.getMany([...chunks.slice(10).map((c) => chunkKey(c.digest)), chunkKey(sha256Digest(Buffer.from('absent')))]);
      expect(batchCalls - before).toBe(1);
      [...first, ...second.slice(0, 10)].forEach((o, i) => expect(o?.equals(chunks[i]!.object), `chunk ${i}`).toBe(true));
      expect(second[10]).toBeUndefined();
    } finally {
      await d.close();
    }
  });
});

describe('chunk and pack PUTs are verified as they arrive', () => {
  it('a raw chunk with one wrong byte, a compressed one that decodes to other bytes, a pack under a wrong name: CHUNK_CORRUPT, nothing stored', async () => {
    const d = createHttpDriver({ url: server.url, token: ADMIN, retries: 0 });
    const onDisk = (digest: Digest, dir = 'chunks') => stat(join(root, 'store', dir, digest.slice(7, 9), digest.slice(7))).then(() => true, () => false);
    try {
      const c = rawObject(300 * 1024);
      const bad = Buffer.from(c.object);
      bad[bad.length - 1] ^= 1;
      expect(await d.putIfAbsent(chunkKey(c.digest), bad).catch((e: unknown) => e)).toSatisfy((e: unknown) => isKkError(e, 'CHUNK_CORRUPT'));
      expect(await onDisk(c.digest)).toBe(false);
      expect(await d.putIfAbsent(chunkKey(c.digest), c.object)).toBe(true);
      expect((await d.get(chunkKey(c.digest)))!.equals(c.object)).toBe(true);

      const text = Buffer.from('kk '.repeat(20_000));
      const other = Buffer.concat([Buffer.from([1]), brotliCompressSync(Buffer.from('kk '.repeat(19_999)))]);
      const good = Buffer.concat([Buffer.from([1]), brotliCompressSync(text)]);
      expect(await d.putIfAbsent(chunkKey(sha256Digest(text)), other).catch((e: unknown) => e)).toSatisfy((e: unknown) => isKkError(e, 'CHUNK_CORRUPT'));
      expect(await onDisk(sha256Digest(text))).toBe(false);
      expect(await d.putIfAbsent(chunkKey(sha256Digest(text)), good)).toBe(true);

      const pack = randomBytes(64 * 1024);
      const wrongName = sha256Digest(Buffer.concat([pack, Buffer.from([0])]));
      expect(await d.putIfAbsent(packKey(wrongName), pack).catch((e: unknown) => e)).toSatisfy((e: unknown) => isKkError(e, 'CHUNK_CORRUPT'));
      expect(await onDisk(wrongName, 'packs')).toBe(false);
      expect(await d.putIfAbsent(packKey(sha256Digest(pack)), pack)).toBe(true);
      expect(await onDisk(sha256Digest(pack), 'packs')).toBe(true);
    } finally {
      await d.close();
    }
  });
});
