// Two servers on one store (DESIGN 9: stateless over its store): whatever one instance is told,
// the other acts on at once — tokens, revocations, upload sessions, versions.
import { startServer, type RunningServer } from '../src/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, mintToken, publishFiles, startTestServer, type TestServer } from './helpers.js';

let a: TestServer;
let b: RunningServer;
beforeAll(async () => {
  a = await startTestServer();
  b = await startServer({ store: a.storeDir, db: a.db, listen: '127.0.0.1:0', adminToken: a.admin, log: false, config: { hasherThreads: 1 } });
});
afterAll(async () => {
  await b.close();
  await a.cleanup();
});

describe('two instances on one store', () => {
  it('a token minted on one works on the other, and its revocation applies there on the next request', async () => {
    const token = await mintToken(a, 'project:twin', ['push', 'pull']);
    expect((await call(b.url, 'GET', '/api/v1/whoami', { token })).status).toBe(200);
    const id = (await call(b.url, 'GET', '/api/v1/whoami', { token })).json().token;
    expect((await call(a.url, 'DELETE', `/api/v1/tokens/${id}`, { token: a.admin })).status).toBe(200);
    expect((await call(b.url, 'GET', '/api/v1/whoami', { token })).status).toBe(401);
  });

  it('an upload started on one instance is continued and finished on the other', async () => {
    const init = await call(a.url, 'POST', '/upload/init', { token: a.admin, json: { project: 'twin', app: 'web', version: 'v1' } });
    expect(init.status).toBe(201);
    expect((await call(b.url, 'PUT', '/file/twin/web/v1?path=a.txt', { token: a.admin, body: 'from b' })).status).toBe(201);
    expect((await call(a.url, 'PUT', '/file/twin/web/v1?path=b.txt', { token: a.admin, body: 'from a' })).status).toBe(201);
    const fin = await call(b.url, 'POST', '/upload/finish', { token: a.admin, json: { upload_id: init.json().upload_id } });
    expect(fin.status).toBe(201);
    expect(fin.json().files).toBe(2);
    expect((await call(a.url, 'GET', '/file/twin/web/v1?path=a.txt', { token: a.admin })).body.toString()).toBe('from b');
    const versions = (await call(b.url, 'GET', '/projects/twin/apps/web/versions', { token: a.admin })).json().items;
    expect(versions.map((v: { version: string }) => v.version)).toEqual(['v1']);
  });

  it('a version or promotion made through one instance is listed by the other at once, despite its cache', async () => {
    const list = async () => (await call(b.url, 'GET', '/projects/twin/apps/web/versions', { token: a.admin })).json().items;
    expect((await list()).map((v: { version: string }) => v.version)).toEqual(['v1']);
    await publishFiles(a, 'twin', 'web', 'v2', { 'a.txt': 'two' });
    expect((await list()).map((v: { version: string }) => v.version)).toEqual(['v2', 'v1']);
    await call(a.url, 'POST', '/promote', { token: a.admin, json: { project: 'twin', app: 'web', version: 'v1' } });
    expect((await list()).find((v: { version: string }) => v.version === 'v1').channels).toEqual(['promoted']);
    await publishFiles(a, 'twin2', 'api', 'v1', { 'x': 'x' });
    const projects = (await call(b.url, 'GET', '/projects?limit=500', { token: a.admin })).json().items.map((p: { name: string }) => p.name);
    expect(projects).toContain('twin2');
  });
});
