import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_PACK_POLICY, Store, chunkKey, createHasher, encodeManifest, isKkError, isPruneDriver, packKey, pull, push, sha256Digest } from '@kk/core';
import type { Digest, Hasher, PruneDriver } from '@kk/core';
import { runDriverConformance } from '@kk/testkit';
import { startServer, type RunningServer } from '@kk/server';
import { createFileDriver, openDriver } from '../src/index.js';
import { createHttpDriver } from '../src/http.js';

const ADMIN = `admin-${randomBytes(16).toString('hex')}`;

async function serve(): Promise<{ server: RunningServer; root: string }> {
  const root = await mkdtemp(path.join(tmpdir(), 'kk-http-driver-'));
  const server = await startServer({ store: path.join(root, 'store'), listen: '127.0.0.1:0', adminToken: ADMIN, log: false, config: { hasherThreads: 1 } });
  return { server, root };
}

runDriverConformance('http', async () => {
  const { server, root } = await serve();
  return {
    driver: createHttpDriver({ url: server.url, token: ADMIN }),
    cleanup: async () => {
      await server.close();
      await rm(root, { recursive: true, force: true });
    },
  };
});

/** Mint a token over the API with the admin token. */
async function mint(url: string, scope: string, permissions: string[]): Promise<string> {
  const res = await fetch(`${url}/api/v1/tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ scope, permissions }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { token: string }).token;
}

describe('http driver', () => {
  let server: RunningServer;
  let root: string;
  let hasher: Hasher;
  beforeAll(async () => {
    ({ server, root } = await serve());
    hasher = createHasher({ threads: 1 });
  });
  afterAll(async () => {
    await hasher.close();
    await server.close();
    await rm(root, { recursive: true, force: true });
  });

  it('maps statuses to KkError codes: no token AUTH, outside scope FORBIDDEN, server/ keys FORBIDDEN', async () => {
    const anonymous = createHttpDriver({ url: server.url, token: 'kk_00000000000000000000_nope', retries: 0 });
    expect(await anonymous.get('kk-store.json').catch((e: unknown) => e)).toSatisfy((e: unknown) => isKkError(e, 'AUTH'));
    await anonymous.close();
    const pullOnly = createHttpDriver({ url: server.url, token: await mint(server.url, 'app:p1/a1', ['pull']) });
    expect(await pullOnly.get('refs/p2/a2/v1').catch((e: unknown) => e)).toSatisfy((e: unknown) => isKkError(e, 'FORBIDDEN'));
    expect(await pullOnly.putIfAbsent('refs/p1/a1/v1', Buffer.from('{}')).catch((e: unknown) => e)).toSatisfy((e: unknown) => isKkError(e, 'FORBIDDEN'));
    await pullOnly.close();
    const admin = createHttpDriver({ url: server.url, token: ADMIN });
    expect(await admin.get('server/tokens/x').catch((e: unknown) => e)).toSatisfy((e: unknown) => isKkError(e, 'FORBIDDEN'));
    await admin.close();
  });

  it('refuses a chunk whose bytes do not match its key with CHUNK_CORRUPT and stores nothing', async () => {
    const d = createHttpDriver({ url: server.url, token: ADMIN });
    const raw = randomBytes(1000);
    const digest = sha256Digest(raw);
    const wrong = Buffer.concat([Buffer.from([0]), randomBytes(1000)]);
    const err = await d.putIfAbsent(chunkKey(digest), wrong).catch((e: unknown) => e);
    expect(isKkError(err, 'CHUNK_CORRUPT')).toBe(true);
    expect(await d.get(chunkKey(digest))).toBeUndefined();
    expect(await d.putIfAbsent(chunkKey(digest), Buffer.concat([Buffer.from([0]), raw]))).toBe(true);
    expect(await d.putIfAbsent(chunkKey(digest), Buffer.concat([Buffer.from([0]), raw]))).toBe(false);
    await d.close();
  });

  it('a second putRef with another manifest is VERSION_EXISTS through the Store', async () => {
    const store = await Store.open(createHttpDriver({ url: server.url, token: ADMIN }));
    const base = {
      format: 'kk-manifest/1' as const,
      project: 'p3',
      app: 'a3',
      version: 'v1',
      created: new Date().toISOString(),
      builder: 'test',
      git_commit: '',
      meta: {},
      chunking: store.config.chunking,
      dirs: [],
      files: [],
    };
    const first = await store.putManifest(base);
    const second = await store.putManifest({ ...base, builder: 'other' });
    expect(await store.putRef('p3', 'a3', 'v1', first)).toBe('created');
    expect(await store.putRef('p3', 'a3', 'v1', first)).toBe('unchanged');
    const err = await store.putRef('p3', 'a3', 'v1', second).catch((e: unknown) => e);
    expect(isKkError(err, 'VERSION_EXISTS')).toBe(true);
    expect(encodeManifest(base).digest).toBe(first);
    await store.driver.close();
  });

  it('retries a 5xx with jittered backoff, sending the token and X-Kk-Agent every time', async () => {
    const { createServer } = await import('node:http');
    const seen: { auth?: string; agent?: string }[] = [];
    const flaky = createServer((req, res) => {
      seen.push({ auth: req.headers.authorization, agent: req.headers['x-kk-agent'] as string });
      if (seen.length <= 2) res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"code":"BACKEND","message":"busy"}}');
      else res.writeHead(200, { 'content-length': '2' }).end('ok');
    });
    await new Promise<void>((r) => flaky.listen(0, '127.0.0.1', r));
    const port = (flaky.address() as import('node:net').AddressInfo).port;
    const d = createHttpDriver({ url: `http://127.0.0.1:${port}`, token: 'tok', agent: 'deploy-bot/2', retries: 3, retryBaseMs: 1 });
    expect((await d.get('kk-store.json'))!.toString()).toBe('ok');
    expect(seen).toEqual(Array.from({ length: 3 }, () => ({ auth: 'Bearer tok', agent: 'deploy-bot/2' })));
    await d.close();
    flaky.closeAllConnections();
    await new Promise((r) => flaky.close(r));
  });

  it('gives up as BACKEND when the server stays down', async () => {
    const { server: s2, root: r2 } = await serve();
    const d = createHttpDriver({ url: s2.url, token: ADMIN, retries: 2, retryBaseMs: 1 });
    expect(await d.get('kk-store.json')).toBeDefined();
    await s2.close();
    const err = await d.get('kk-store.json').catch((e: unknown) => e);
    expect(isKkError(err, 'BACKEND')).toBe(true);
    await d.close();
    await rm(r2, { recursive: true, force: true });
  });

  it('openDriver("http://...") offers deletion to push tokens only, and push + pull round-trip through it', async () => {
    const pushToken = await mint(server.url, 'project:proj', ['push', 'pull']);
    const pullToken = await mint(server.url, 'app:proj/web', ['pull']);
    const pusher = await openDriver(server.url, { token: pushToken });
    const puller = await openDriver(server.url, { token: pullToken });
    expect(isPruneDriver(pusher)).toBe(true);
    expect(isPruneDriver(puller)).toBe(false);

    const src = path.join(root, 'src');
    const { mkdir, writeFile } = await import('node:fs/promises');
    await mkdir(path.join(src, 'bin'), { recursive: true });
    const big = randomBytes(3 * 1024 * 1024 + 17);
    await writeFile(path.join(src, 'bin', 'app'), big);
    await writeFile(path.join(src, 'README'), 'hello\n');
    const result = await push({
      store: await Store.open(pusher),
      hasher,
      project: 'proj',
      app: 'web',
      version: '1.0.0',
      dir: src,
      statCache: false,
    });
    expect(result.status).toBe('created');
    expect(result.chunksUploaded).toBeGreaterThan(1);

    const target = path.join(root, 'target');
    const pulled = await pull({ store: await Store.open(puller), hasher, project: 'proj', app: 'web', version: 'latest', target, stateDir: path.join(root, 'state') });
    expect(pulled.version).toBe('1.0.0');
    expect((await readFile(path.join(target, 'bin', 'app'))).equals(big)).toBe(true);
    expect(await readFile(path.join(target, 'README'), 'utf8')).toBe('hello\n');
    await pusher.close();
    await puller.close();
  });

  it('hasMany over chunk keys asks the batch endpoint and keeps order and duplicates', async () => {
    const d = createHttpDriver({ url: server.url, token: ADMIN }) as PruneDriver;
    const raws = Array.from({ length: 5 }, () => randomBytes(100));
    const digests = raws.map((r) => sha256Digest(r)) as Digest[];
    await d.putIfAbsent(chunkKey(digests[1]!), Buffer.concat([Buffer.from([0]), raws[1]!]));
    await d.putIfAbsent(chunkKey(digests[3]!), Buffer.concat([Buffer.from([0]), raws[3]!]));
    const keys = [...digests, digests[1]!].map(chunkKey);
    expect(await d.hasMany(keys)).toEqual([false, true, false, true, false, true]);
    await d.close();
  });
});

describe('http driver with packs (core PACKS.md)', () => {
  let server: RunningServer;
  let root: string;
  let hasher: Hasher;
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kk-http-packs-'));
    // The server serves whatever store it finds: one made with a pack policy.
    await Store.open(createFileDriver({ root: path.join(root, 'store') }), { create: true, packs: { ...DEFAULT_PACK_POLICY, below: 64 * 1024, target: 64 * 1024 } });
    server = await startServer({ store: path.join(root, 'store'), listen: '127.0.0.1:0', adminToken: ADMIN, log: false, config: { hasherThreads: 1 } });
    hasher = createHasher({ threads: 1 });
  });
  afterAll(async () => {
    await hasher.close();
    await server.close();
    await rm(root, { recursive: true, force: true });
  });

  it('push carries packs and the chunk map; the server checks them; a pull through it is byte-exact', async () => {
    const token = await mint(server.url, 'project:proj', ['push', 'pull']);
    const d = await openDriver(server.url, { token });
    const { mkdir, writeFile } = await import('node:fs/promises');
    const src = path.join(root, 'src');
    await mkdir(path.join(src, 'lib'), { recursive: true });
    const files = Array.from({ length: 60 }, (_, i) => randomBytes(2000 + i));
    for (const [i, b] of files.entries()) await writeFile(path.join(src, 'lib', `f${i}`), b);
    const r = await push({ store: await Store.open(d), hasher, project: 'proj', app: 'packed', version: '1', dir: src, statCache: false, deltas: false });
    expect(r.packsUploaded).toBeGreaterThan(1);
    const local = await Store.open(createFileDriver({ root: path.join(root, 'store') }));
    const ref = (await local.getRef('proj', 'packed', '1'))!;
    const map = await local.getChunkMap(ref.chunkMap!);
    expect(map.size).toBe(60);
    for (const p of map.packs) expect(await local.driver.stat(packKey(p))).toBeDefined();

    const target = path.join(root, 'target-packed');
    await pull({ store: await Store.open(d), hasher, project: 'proj', app: 'packed', version: '1', target, stateDir: path.join(root, 'state-packed') });
    for (const [i, b] of files.entries()) expect((await readFile(path.join(target, 'lib', `f${i}`))).equals(b)).toBe(true);

    // A pack whose bytes do not match its name is refused and not stored.
    const bogus = randomBytes(1000);
    const wrong = packKey(sha256Digest(Buffer.from('something else')));
    expect(await d.putIfAbsent(wrong, bogus).catch((e: unknown) => e)).toSatisfy((e: unknown) => isKkError(e, 'CHUNK_CORRUPT'));
    expect(await local.driver.stat(wrong)).toBeUndefined();
    // A ref naming a chunk map the server lacks is refused.
    const err = await (await Store.open(d)).putRef('proj', 'packed', '2', ref.manifest, 'me', undefined, sha256Digest('no such map')).catch((e: unknown) => e);
    expect(err).toSatisfy((e: unknown) => isKkError(e) && /chunk map/.test((e as Error).message));
    await d.close();
  });
});
