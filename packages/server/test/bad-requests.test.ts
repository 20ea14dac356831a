// Bad requests (acceptance 9): a chunk that does not match its digest is 422 and never stored;
// a body over the limit is 413; an invalid name in any path parameter is 400; and none of them
// changes a single byte of the store.
import { randomBytes } from 'node:crypto';
import { brotliCompressSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Digest } from '@kk/core';
import { call, publishFiles, rawCall, snapshot, startTestServer, type TestServer } from './helpers.js';

let t: TestServer;
let before: Record<string, string>;
/** The control database's event seq after the setup: refused requests change no state there either. */
let seqBefore: number;
const LIMIT = 64 * 1024;

beforeAll(async () => {
  t = await startTestServer({ maxBodyBytes: LIMIT, maxFileBytes: 2 * LIMIT });
  await publishFiles(t, 'good', 'app', 'v1', { 'a.txt': 'a' });
  before = await snapshot(t.storeDir);
  seqBefore = (await call(t.url, 'GET', '/api/v1/events?since=0&limit=1', { token: t.admin })).json().seq;
  expect(seqBefore).toBeGreaterThan(0);
});
afterAll(async () => {
  expect((await call(t.url, 'GET', '/api/v1/events?since=0&limit=1', { token: t.admin })).json().seq).toBe(seqBefore);
  await t.cleanup();
});

describe('refused requests leave the store unchanged', () => {
  it('a chunk whose bytes do not match its digest is 422 and never stored', async () => {
    const raw = randomBytes(4096);
    const d = sha256Digest(raw);
    const cases = [
      Buffer.concat([Buffer.from([0]), randomBytes(4096)]), // other bytes
      Buffer.concat([Buffer.from([0]), raw.subarray(1)]), // one byte short
      Buffer.concat([Buffer.from([1]), randomBytes(100)]), // brotli header, garbage payload
      Buffer.concat([Buffer.from([1]), brotliCompressSync(randomBytes(4096))]), // valid brotli, other bytes
      Buffer.concat([Buffer.from([7]), raw]), // unknown encoding
      Buffer.alloc(0),
    ];
    for (const body of cases) {
      const r = await call(t.url, 'PUT', `/api/v1/chunks/${d}`, { token: t.admin, body });
      expect(r.status).toBe(422);
      expect(r.json().error.code).toBe('CHUNK_CORRUPT');
    }
    expect((await call(t.url, 'GET', `/api/v1/chunks/${d}`, { token: t.admin })).status).toBe(404);
    expect(await snapshot(t.storeDir)).toEqual(before);
  });

  it('a manifest whose bytes do not match its digest is 422', async () => {
    const r = await call(t.url, 'PUT', `/api/v1/manifests/sha256:${'0'.repeat(64)}`, { token: t.admin, body: '{"format":"kk-manifest/1"}' });
    expect(r.status).toBe(422);
    expect(await snapshot(t.storeDir)).toEqual(before);
  });

  it('a body over the configured limit is 413, declared or streamed', async () => {
    const big = randomBytes(LIMIT + 1);
    const d = sha256Digest(big);
    expect((await call(t.url, 'PUT', `/api/v1/chunks/${d}`, { token: t.admin, body: Buffer.concat([Buffer.from([0]), big]) })).status).toBe(413);
    const json = JSON.stringify({ project: 'good', app: 'app', version: 'v2', meta: { pad: 'x'.repeat(LIMIT) } });
    const init = await call(t.url, 'POST', '/upload/init', { token: t.admin, body: json, headers: { 'content-type': 'application/json' } });
    expect(init.status).toBe(413);
    expect(init.json().error.code).toBe('TOO_LARGE');
    expect((await call(t.url, 'PUT', '/file/good/app/v2?path=big.bin', { token: t.admin, body: randomBytes(2 * LIMIT + 1) })).status).toBe(413);
    // Without a Content-Length the server counts as the bytes arrive.
    const { request } = await import('undici');
    async function* chunked() {
      for (let i = 0; i < 3; i++) yield randomBytes(LIMIT);
    }
    const streamed = await request(`${t.url}/file/good/app/v2?path=streamed.bin`, { method: 'PUT', headers: { authorization: `Bearer ${t.admin}` }, body: chunked() });
    await streamed.body.dump();
    expect(streamed.statusCode).toBe(413);
    expect(await snapshot(t.storeDir)).toEqual(before);
  });

  it('an invalid name in any path parameter of any route is 400', async () => {
    const routes = t.server.server.router.routes.filter((r) => r.pattern.includes('{'));
    expect(routes.length).toBeGreaterThan(20);
    const good: Record<string, string> = { project: 'good', app: 'app', version: 'v1', channel: 'promoted', digest: `sha256:${'a'.repeat(64)}`, id: 'x1', delivery: 'd1', key: 'some/key' };
    const everywhere = ['..', '%2E%2E', '.', 'x%00y', 'a%5Cb'];
    const bad: Record<string, string[]> = {
      project: ['Upper', 'a%2Fb', '-x', 'a..b', 'x'.repeat(65)],
      app: ['Upper', 'a%2Fb', '_x', 'a..b'],
      version: ['a%2Fb', '-x', 'v%20', 'x'.repeat(129)],
      channel: ['Promoted', 'a%2Fb'],
      digest: ['sha256:xyz', 'a'.repeat(64), `sha256:${'A'.repeat(64)}`],
      id: ['a%2Fb', '-x'],
      delivery: ['a%2Fb'],
      key: ['a/%2E%2E/b', 'a//b'],
    };
    let tried = 0;
    for (const route of routes) {
      const params = [...route.pattern.matchAll(/\{(\w+)\+?\}/g)].map((m) => m[1]!);
      for (const param of params) {
        for (const value of [...everywhere, ...(bad[param] ?? [])]) {
          const p = route.pattern.replace(/\{(\w+)\+?\}/g, (_, name: string) => (name === param ? value : good[name]!));
          const r = await rawCall(t.url, route.method, `${p}?path=a.txt`, t.admin);
          expect(r.status, `${route.method} ${p}`).toBe(400);
          tried++;
        }
      }
    }
    expect(tried).toBeGreaterThan(200);
    expect(await snapshot(t.storeDir)).toEqual(before);
  });

  it('an unsafe file path or invalid names in a JSON body are 400 too', async () => {
    for (const p of ['../etc/passwd', '/abs', 'a//b', 'a/./b']) {
      expect((await call(t.url, 'GET', `/file/good/app/v1?path=${encodeURIComponent(p)}`, { token: t.admin })).status, p).toBe(400);
      expect((await call(t.url, 'PUT', `/file/good/app/v2?path=${encodeURIComponent(p)}`, { token: t.admin, body: 'x' })).status, p).toBe(400);
    }
    const bodies: [string, string, unknown][] = [
      ['POST', '/promote', { project: '../x', app: 'app', version: 'v1' }],
      ['POST', '/promote', { project: 'good', app: 'app', version: '..' }],
      ['POST', '/upload/init', { project: 'good', app: 'app', version: '../v2' }],
      ['POST', '/upload/init', { project: 'good', app: 'app', version: 'v2', files: [{ path: '../x', size: 1, sha256: sha256Digest('x') }] }],
      ['POST', '/api/v1/rollback', { project: 'good', app: 'APP' }],
      ['POST', '/webhooks', { name: 'x', url: 'http://127.0.0.1:9/', events: ['push'], project: '../p' }],
      ['POST', '/api/v1/chunks/missing', { digests: ['sha256:../../x'] }],
    ];
    for (const [method, p, json] of bodies) {
      expect((await call(t.url, method, p, { token: t.admin, json })).status, `${p} ${JSON.stringify(json)}`).toBe(400);
    }
    expect(await snapshot(t.storeDir)).toEqual(before);
  });

  it('a store key outside the layout is 400 and server/ keys are never served', async () => {
    expect((await call(t.url, 'PUT', '/api/v1/objects/refs/only-two', { token: t.admin, body: '{}' })).status).toBe(400);
    expect((await call(t.url, 'PUT', '/api/v1/objects/locks/other', { token: t.admin, body: '{}' })).status).toBe(400);
    for (const method of ['GET', 'PUT', 'DELETE']) {
      expect((await call(t.url, method, '/api/v1/objects/server/tokens/x', { token: t.admin, body: method === 'PUT' ? '{}' : undefined })).status).toBe(403);
    }
    expect((await call(t.url, 'GET', '/api/v1/children?prefix=server/', { token: t.admin })).status).toBe(403);
    const root = (await call(t.url, 'GET', '/api/v1/children?prefix=', { token: t.admin })).json().children;
    expect(root).not.toContain('server');
    expect(await snapshot(t.storeDir)).toEqual(before);
  });
});
