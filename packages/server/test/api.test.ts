// Every row of seed 001 6.1 against the running server, plus the listing, cache and
// query endpoints around them.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Digest, sha256Digest } from '@kk/core';
import { call, httpStore, mintToken, publishAt, publishFiles, startTestServer, type TestServer } from './helpers.js';

const execFileAsync = promisify(execFile);

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t.cleanup();
});

const get = (p: string, token: string | null = t.admin, headers: Record<string, string> = {}) => call(t.url, 'GET', p, { token, headers });

describe('seed 6.1: projects, apps, versions sorted by creation time', () => {
  beforeAll(async () => {
    const store = await httpStore(t);
    // Created out of name order, so sorting by name and by time differ.
    const times = ['2024-03-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z', '2024-02-01T00:00:00.000Z', '2024-05-01T00:00:00.000Z', '2024-04-01T00:00:00.000Z'];
    for (let i = 0; i < times.length; i++) await publishAt(store, `list-p${i}`, 'app', 'v1', times[i]!);
    await publishAt(store, 'list-p0', 'zeta', 'v1', '2024-06-01T00:00:00.000Z');
    await publishAt(store, 'list-p0', 'alpha', 'v1', '2024-07-01T00:00:00.000Z');
    await publishAt(store, 'list-p0', 'alpha', 'v2', '2024-06-15T00:00:00.000Z');
    await publishAt(store, 'list-p0', 'alpha', 'v3', '2024-08-01T00:00:00.000Z');
    await store.driver.close();
  });

  const names = (r: { json(): { items: { name?: string; version?: string }[] } }) => r.json().items.map((i) => i.name ?? i.version);
  const ours = (list: string[] | undefined[]) => (list as string[]).filter((n) => n.startsWith('list-'));

  it('GET /projects sorts by creation time both ways, default newest first', async () => {
    expect(ours(names(await get('/projects')))).toEqual(['list-p3', 'list-p4', 'list-p0', 'list-p2', 'list-p1']);
    expect(ours(names(await get('/projects?order=asc')))).toEqual(['list-p1', 'list-p2', 'list-p0', 'list-p4', 'list-p3']);
    expect(ours(names(await get('/projects?sort=-created')))).toEqual(['list-p3', 'list-p4', 'list-p0', 'list-p2', 'list-p1']);
  });

  it('GET /projects paginates with limit and offset (default 50, at most 500)', async () => {
    const all = ours(names(await get('/projects?order=asc&limit=500')));
    const page1 = await get('/projects?order=asc&limit=2');
    const body1 = page1.json();
    expect(body1.limit).toBe(2);
    expect(body1.items).toHaveLength(2);
    expect(body1.next_offset).toBe(2);
    const page2 = await get(`/projects?order=asc&limit=2&offset=${body1.next_offset}`);
    const page3 = await get('/projects?order=asc&limit=2&offset=4');
    expect(ours([...names(page1), ...names(page2), ...names(page3)] as string[])).toEqual(all);
    expect(page3.json().next_offset).toBe(null);
    expect((await get('/projects')).json().limit).toBe(50);
    expect((await get('/projects?limit=100000')).json().limit).toBe(500);
    expect((await get('/projects?limit=abc')).status).toBe(400);
    expect((await get('/projects?order=sideways')).status).toBe(400);
  });

  it('GET /projects/{project}/apps sorts apps by creation time both ways', async () => {
    expect(names(await get('/projects/list-p0/apps'))).toEqual(['alpha', 'zeta', 'app']);
    expect(names(await get('/projects/list-p0/apps?order=asc&limit=2'))).toEqual(['app', 'zeta']);
    expect((await get('/projects/nope/apps')).status).toBe(404);
  });

  it('GET /projects/{project}/apps/{app}/versions lists versions by creation time both ways', async () => {
    const r = await get('/projects/list-p0/apps/alpha/versions');
    expect(r.status).toBe(200);
    expect(names(r)).toEqual(['v3', 'v1', 'v2']);
    expect(r.json().items[0]).toMatchObject({ project: 'list-p0', app: 'alpha', version: 'v3', created: '2024-08-01T00:00:00.000Z', channels: [] });
    expect(r.json().items[0].manifest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(names(await get('/projects/list-p0/apps/alpha/versions?order=asc'))).toEqual(['v2', 'v1', 'v3']);
    expect((await get('/projects/list-p0/apps/nope/versions')).status).toBe(404);
  });

  it('the same listings are served under /api/v1 and gzip-compressed when asked', async () => {
    const plain = await get('/api/v1/projects?limit=500');
    const gz = await get('/api/v1/projects?limit=500', t.admin, { 'accept-encoding': 'gzip' });
    expect(gz.headers['content-encoding']).toBe('gzip');
    expect(JSON.parse(gunzipSync(gz.body).toString())).toEqual(plain.json());
  });

  it('a new version shows in the cached listing at once (writes invalidate the cache)', async () => {
    expect(names(await get('/projects/list-p0/apps/alpha/versions'))).not.toContain('v4');
    const store = await httpStore(t);
    await publishAt(store, 'list-p0', 'alpha', 'v4', '2024-09-01T00:00:00.000Z');
    await store.driver.close();
    expect(names(await get('/projects/list-p0/apps/alpha/versions'))[0]).toBe('v4');
  });

  it('POST /api/v1/versions/query answers the versions of many apps at once (seed 10.3)', async () => {
    const r = await call(t.url, 'POST', '/api/v1/versions/query', { token: t.admin, json: { apps: ['list-p0/alpha', { project: 'list-p1', app: 'app' }, 'bad/NAME'], limit: 2 } });
    expect(r.status).toBe(200);
    const [a, b, c] = r.json().results;
    expect(a.versions.map((v: { version: string }) => v.version)).toEqual(['v4', 'v3']);
    expect(a.total).toBe(4);
    expect(b.versions.map((v: { version: string }) => v.version)).toEqual(['v1']);
    expect(c.error.code).toBe('INVALID_NAME');
  });
});

describe('seed 6.1: publishing with upload/init, PUT /file and upload/finish', () => {
  const big = randomBytes(3 * 1024 * 1024 + 123);
  const bigDigest = sha256Digest(big);

  it('POST /upload/init returns an upload id and the files that are missing', async () => {
    const r = await call(t.url, 'POST', '/upload/init', {
      token: t.admin,
      json: {
        project: 'pub',
        app: 'web',
        version: '1.0.0',
        git_commit: 'a8f3c21d',
        builder: 'build-01',
        files: [
          { path: 'bin/app', size: big.length, sha256: bigDigest, mode: 0o755 },
          { path: 'config/app.yml', size: 6, sha256: sha256Digest('a: 1\n\n') },
        ],
      },
    });
    expect(r.status).toBe(201);
    expect(r.json().upload_id).toMatch(/^up-[0-9a-f]{24}$/);
    expect(r.json().missing).toEqual(['bin/app', 'config/app.yml']);
  });

  it('PUT /file/{project}/{app}/{hash}?path= takes whole files, and finish refuses until all arrived', async () => {
    const put = await call(t.url, 'PUT', '/file/pub/web/1.0.0?path=bin/app&mode=755', { token: t.admin, body: big });
    expect(put.status).toBe(201);
    expect(put.json()).toMatchObject({ path: 'bin/app', size: big.length, sha256: bigDigest });
    expect(put.json().chunks).toBeGreaterThan(1);
    const early = await call(t.url, 'POST', '/upload/finish', { token: t.admin, json: { project: 'pub', app: 'web', version: '1.0.0' } });
    expect(early.status).toBe(409);
    expect(early.json().error.details.missing).toEqual(['config/app.yml']);
    const wrong = await call(t.url, 'PUT', '/file/pub/web/1.0.0?path=config/app.yml', { token: t.admin, body: 'other\n' });
    expect(wrong.status).toBe(422);
    expect((await call(t.url, 'PUT', '/file/pub/web/1.0.0?path=config/app.yml', { token: t.admin, body: 'a: 1\n\n' })).status).toBe(201);
  });

  it('POST /upload/finish commits the version; GET /manifest returns its file list', async () => {
    const init = await call(t.url, 'POST', '/upload/init', { token: t.admin, json: { project: 'pub', app: 'web', version: '1.0.0' } });
    const fin = await call(t.url, 'POST', '/upload/finish', { token: t.admin, json: { upload_id: init.json().upload_id } });
    expect(fin.status).toBe(201);
    expect(fin.json()).toMatchObject({ project: 'pub', app: 'web', version: '1.0.0', status: 'created', files: 2 });
    const m = await get('/manifest/pub/web/1.0.0');
    expect(m.status).toBe(200);
    expect(m.headers['x-kk-manifest-digest']).toBe(fin.json().manifest);
    expect(sha256Digest(m.body)).toBe(fin.json().manifest);
    const manifest = m.json();
    expect(manifest).toMatchObject({ project: 'pub', app: 'web', version: '1.0.0', git_commit: 'a8f3c21d', builder: 'build-01' });
    expect(manifest.files.map((f: { path: string; mode: number; sha256: string }) => [f.path, f.mode, f.sha256])).toEqual([
      ['bin/app', 0o755, bigDigest],
      ['config/app.yml', 0o644, sha256Digest('a: 1\n\n')],
    ]);
    const yaml = await get('/manifest/pub/web/latest?format=meta.yaml');
    expect(yaml.body.toString()).toContain(`sha256: ${bigDigest.slice(7)}`);
    expect((await get('/manifest/pub/web/9.9.9')).status).toBe(404);
  });

  it('publishing the same version again is refused with 409', async () => {
    expect((await call(t.url, 'POST', '/upload/init', { token: t.admin, json: { project: 'pub', app: 'web', version: '1.0.0' } })).status).toBe(409);
    expect((await call(t.url, 'PUT', '/file/pub/web/1.0.0?path=x', { token: t.admin, body: 'x' })).status).toBe(409);
  });

  it('init does not ask again for files the store already holds', async () => {
    const r = await call(t.url, 'POST', '/upload/init', {
      token: t.admin,
      json: { project: 'pub', app: 'web', version: '1.0.1', files: [{ path: 'bin/app', size: big.length, sha256: bigDigest }, { path: 'new.txt', size: 3, sha256: sha256Digest('new') }] },
    });
    expect(r.json().missing).toEqual(['new.txt']);
    await call(t.url, 'PUT', '/file/pub/web/1.0.1?path=new.txt', { token: t.admin, body: 'new' });
    const fin = await call(t.url, 'POST', '/upload/finish', { token: t.admin, json: { upload_id: r.json().upload_id } });
    expect(fin.status).toBe(201);
    expect(fin.json().files).toBe(2);
  });

  it('GET /file/{project}/{app}/{hash}?path= streams the whole file', async () => {
    const r = await get('/file/pub/web/1.0.0?path=bin/app');
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe(String(big.length));
    expect(r.body.equals(big)).toBe(true);
    expect((await get('/file/pub/web/1.0.0?path=missing')).status).toBe(404);
  });

  it('GET /file honours Range, across chunk boundaries and at the end', async () => {
    const range = async (h: string) => get('/file/pub/web/1.0.0?path=bin/app', t.admin, { range: h });
    const mid = await range('bytes=1048000-2100000');
    expect(mid.status).toBe(206);
    expect(mid.headers['content-range']).toBe(`bytes 1048000-2100000/${big.length}`);
    expect(mid.body.equals(big.subarray(1048000, 2100001))).toBe(true);
    const tail = await range('bytes=-10');
    expect(tail.body.equals(big.subarray(big.length - 10))).toBe(true);
    expect((await range(`bytes=${big.length}-`)).status).toBe(416);
  });

  it(`curl -r 100-199 returns exactly those bytes (acceptance 4; ${existsSync('/usr/bin/curl') ? 'real curl' : 'undici, curl absent'})`, async () => {
    const url = `${t.url}/file/pub/web/1.0.0?path=bin/app`;
    let bytes: Buffer;
    if (existsSync('/usr/bin/curl')) {
      const { stdout } = await execFileAsync('curl', ['-sS', '-f', '-r', '100-199', '-H', `Authorization: Bearer ${t.admin}`, url], { encoding: 'buffer' });
      bytes = stdout;
    } else {
      bytes = (await get('/file/pub/web/1.0.0?path=bin/app', t.admin, { range: 'bytes=100-199' })).body;
    }
    expect(bytes.length).toBe(100);
    expect(bytes.equals(big.subarray(100, 200))).toBe(true);
  });
});

describe('seed 6.1: POST /promote, and rollback and delete around it', () => {
  beforeAll(async () => {
    await publishFiles(t, 'rel', 'api', 'v1', { 'a.txt': 'one' });
    await publishFiles(t, 'rel', 'api', 'v2', { 'a.txt': 'two' });
  });

  it('POST /promote points the promoted channel at a version', async () => {
    const r = await call(t.url, 'POST', '/promote', { token: t.admin, json: { project: 'rel', app: 'api', version: 'v1' } });
    expect(r.status).toBe(200);
    expect(r.json()).toMatchObject({ channel: 'promoted', version: 'v1' });
    const versions = (await get('/projects/rel/apps/rel/versions')).status;
    expect(versions).toBe(404);
    const listed = (await get('/projects/rel/apps/api/versions')).json().items;
    expect(listed.find((v: { version: string }) => v.version === 'v1').channels).toEqual(['promoted']);
    expect((await get('/file/rel/api/promoted?path=a.txt')).body.toString()).toBe('one');
    expect((await call(t.url, 'POST', '/promote', { token: t.admin, json: { project: 'rel', app: 'api', version: 'v9' } })).status).toBe(404);
  });

  it('rollback moves the channel back to its previous version', async () => {
    await call(t.url, 'POST', '/promote', { token: t.admin, json: { project: 'rel', app: 'api', version: 'v2' } });
    const r = await call(t.url, 'POST', '/api/v1/rollback', { token: t.admin, json: { project: 'rel', app: 'api' } });
    expect(r.status).toBe(200);
    expect(r.json().version).toBe('v1');
    expect(r.json().history[0].version).toBe('v2');
  });

  it('a promoted version cannot be deleted; another one can', async () => {
    expect((await call(t.url, 'DELETE', '/api/v1/projects/rel/apps/api/versions/v1', { token: t.admin })).status).toBe(409);
    expect((await call(t.url, 'DELETE', '/api/v1/projects/rel/apps/api/versions/v2', { token: t.admin })).status).toBe(204);
    expect((await get('/manifest/rel/api/v2')).status).toBe(404);
  });
});

describe('seed 6.1: webhooks CRUD', () => {
  it('POST /webhooks creates, GET /webhooks lists, PUT /webhooks/{id} updates, DELETE /webhooks/{id} deletes', async () => {
    const created = await call(t.url, 'POST', '/webhooks', { token: t.admin, json: { name: 'slack_notify', event: 'promote', url: 'http://127.0.0.1:9/hook' } });
    expect(created.status).toBe(201);
    const id = created.json().id;
    expect(created.json()).toMatchObject({ name: 'slack_notify', events: ['promote'], active: true });
    expect(created.json().secret).toEqual(expect.any(String));
    const listed = await get('/webhooks');
    expect(listed.status).toBe(200);
    const item = listed.json().items.find((w: { id: string }) => w.id === id);
    expect(item).toMatchObject({ name: 'slack_notify', has_secret: true });
    expect(item.secret).toBeUndefined();
    const updated = await call(t.url, 'PUT', `/webhooks/${id}`, { token: t.admin, json: { events: ['push', 'promote'], url: 'http://127.0.0.1:9/other' } });
    expect(updated.status).toBe(200);
    expect(updated.json()).toMatchObject({ events: ['push', 'promote'], url: 'http://127.0.0.1:9/other', name: 'slack_notify' });
    expect((await call(t.url, 'PUT', `/webhooks/${id}`, { token: t.admin, json: { events: ['explode'] } })).status).toBe(400);
    expect((await call(t.url, 'DELETE', `/webhooks/${id}`, { token: t.admin })).status).toBe(204);
    expect((await get('/webhooks')).json().items.some((w: { id: string }) => w.id === id)).toBe(false);
    expect((await call(t.url, 'DELETE', `/webhooks/${id}`, { token: t.admin })).status).toBe(404);
  });
});

describe('the chunk protocol', () => {
  it('POST /api/v1/chunks/missing answers up to 10,000 digests; the batch GET streams many chunks', async () => {
    const store = await httpStore(t);
    const raws = Array.from({ length: 4 }, () => randomBytes(500));
    const ds = raws.map((r) => sha256Digest(r)) as Digest[];
    for (const i of [0, 2]) await store.putChunkObject(ds[i]!, Buffer.concat([Buffer.from([0]), raws[i]!]));
    await store.driver.close();
    const many = Array.from({ length: 10_000 }, (_, i) => `sha256:${createHash('sha256').update(String(i)).digest('hex')}`);
    const r = await call(t.url, 'POST', '/api/v1/chunks/missing', { token: t.admin, json: { digests: [...ds, ...many.slice(4)] } });
    expect(r.status).toBe(200);
    expect(r.json().missing.slice(0, 2)).toEqual([ds[1], ds[3]]);
    expect(r.json().missing).toHaveLength(9998);
    expect((await call(t.url, 'POST', '/api/v1/chunks/missing', { token: t.admin, json: { digests: [...many, ds[0]] } })).status).toBe(400);

    const batch = await call(t.url, 'POST', '/api/v1/chunks/batch', { token: t.admin, json: { digests: [ds[2], ds[1], ds[0]] } });
    expect(batch.status).toBe(200);
    const frames: (Buffer | null)[] = [];
    for (let off = 0; off < batch.body.length; ) {
      const len = batch.body.readUInt32BE(off);
      off += 4;
      if (len === 0xffffffff) frames.push(null);
      else {
        frames.push(batch.body.subarray(off, off + len));
        off += len;
      }
    }
    expect(frames).toHaveLength(3);
    expect(frames[0]!.subarray(1).equals(raws[2]!)).toBe(true);
    expect(frames[1]).toBe(null);
    expect(frames[2]!.subarray(1).equals(raws[0]!)).toBe(true);
  });

  it('GET /api/v1/chunks/{digest} honours Range on the stored object', async () => {
    const store = await httpStore(t);
    const raw = randomBytes(800);
    const d = sha256Digest(raw);
    await store.putChunkObject(d, Buffer.concat([Buffer.from([0]), raw]));
    await store.driver.close();
    const r = await get(`/api/v1/chunks/${d}`, t.admin, { range: 'bytes=1-100' });
    expect(r.status).toBe(206);
    expect(r.body.equals(raw.subarray(0, 100))).toBe(true);
  });
});

describe('operations', () => {
  it('GET /healthz needs no token; GET /metrics exposes Prometheus counters', async () => {
    const h = await get('/healthz', null);
    expect(h.status).toBe(200);
    expect(h.json().status).toBe('ok');
    const m = await get('/metrics', null);
    expect(m.status).toBe(200);
    const text = m.body.toString();
    for (const name of ['kk_http_requests_total', 'kk_http_request_duration_seconds', 'kk_http_bytes_received_total', 'kk_http_bytes_sent_total', 'kk_dedup_hits_total', 'kk_webhook_queue_depth', 'kk_gc_bytes_freed_total']) {
      expect(text).toContain(name);
    }
    expect(text).toMatch(/kk_http_requests_total\{method="GET",route="\/projects",status="200"\} \d+/);
    expect(text).toMatch(/kk_dedup_hits_total\{via="init"\} [1-9]/);
    expect(text).toMatch(/kk_http_bytes_received_total\{route="\/file\/\{project\}\/\{app\}\/\{version\}"\} [1-9]/);
  });

  it('an unknown route is 404 and a wrong method 405, both as JSON errors', async () => {
    const r = await get('/nothing/here');
    expect(r.status).toBe(404);
    expect(r.json().error.code).toBe('NOT_FOUND');
    const m = await call(t.url, 'DELETE', '/projects', { token: t.admin });
    expect(m.status).toBe(405);
    expect(m.headers.allow).toBe('GET');
  });

  it('whoami reports the calling token', async () => {
    const token = await mintToken(t, 'project:pub', ['pull']);
    const r = await get('/api/v1/whoami', token);
    expect(r.json()).toMatchObject({ scope: 'project:pub', permissions: ['pull'] });
  });
});
