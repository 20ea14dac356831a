// Tokens (seed 5, acceptance 5): scopes, permissions, expiry, revocation, minting limits.
import { readdir, readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, mintToken, openControl, publishFiles, startTestServer, type TestServer } from './helpers.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
  await publishFiles(t, 'shop', 'web', 'v1', { 'index.html': '<h1>web</h1>' });
  await publishFiles(t, 'shop', 'api', 'v1', { 'app.js': 'api' });
});
afterAll(async () => {
  await t.cleanup();
});

describe('an app-scoped pull token', () => {
  let token: string;
  beforeAll(async () => {
    token = await mintToken(t, 'app:shop/web', ['pull']);
  });

  it('pulls its app: manifest, versions and files', async () => {
    expect((await call(t.url, 'GET', '/manifest/shop/web/v1', { token })).status).toBe(200);
    expect((await call(t.url, 'GET', '/projects/shop/apps/web/versions', { token })).status).toBe(200);
    const f = await call(t.url, 'GET', '/file/shop/web/v1?path=index.html', { token });
    expect(f.body.toString()).toBe('<h1>web</h1>');
  });

  it('sees only its own project and app in listings', async () => {
    expect((await call(t.url, 'GET', '/projects', { token })).json().items.map((p: { name: string }) => p.name)).toEqual(['shop']);
    expect((await call(t.url, 'GET', '/projects/shop/apps', { token })).json().items.map((a: { name: string }) => a.name)).toEqual(['web']);
  });

  it('gets 403 for another app', async () => {
    for (const p of ['/manifest/shop/api/v1', '/file/shop/api/v1?path=app.js', '/projects/shop/apps/api/versions']) {
      const r = await call(t.url, 'GET', p, { token });
      expect(r.status, p).toBe(403);
      expect(r.json().error.code).toBe('FORBIDDEN');
    }
  });

  it('gets 403 for any upload, even to its own app', async () => {
    const attempts = [
      call(t.url, 'POST', '/upload/init', { token, json: { project: 'shop', app: 'web', version: 'v2' } }),
      call(t.url, 'PUT', '/file/shop/web/v2?path=x', { token, body: 'x' }),
      call(t.url, 'POST', '/upload/finish', { token, json: { project: 'shop', app: 'web', version: 'v2' } }),
      call(t.url, 'PUT', `/api/v1/chunks/sha256:${'a'.repeat(64)}`, { token, body: Buffer.from([0, 1]) }),
      call(t.url, 'POST', '/promote', { token, json: { project: 'shop', app: 'web', version: 'v1' } }),
    ];
    for (const r of await Promise.all(attempts)) expect(r.status).toBe(403);
    expect((await call(t.url, 'GET', '/manifest/shop/web/v2', { token: t.admin })).status).toBe(404);
  });
});

describe('401 for a missing, wrong, revoked or expired token', () => {
  it('no token', async () => {
    const r = await call(t.url, 'GET', '/projects', { token: null });
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toContain('Bearer');
  });

  it('a wrong token: garbage, and a real id with a wrong secret', async () => {
    expect((await call(t.url, 'GET', '/projects', { token: 'nope' })).status).toBe(401);
    const real = await mintToken(t, 'global', ['pull']);
    const forged = real.slice(0, -4) + (real.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    expect((await call(t.url, 'GET', '/projects', { token: forged })).status).toBe(401);
  });

  it('a revoked token, from the very next request', async () => {
    const token = await mintToken(t, 'project:shop', ['pull']);
    expect((await call(t.url, 'GET', '/projects', { token })).status).toBe(200);
    const id = (await call(t.url, 'GET', '/api/v1/whoami', { token })).json().token;
    const rev = await call(t.url, 'DELETE', `/api/v1/tokens/${id}`, { token: t.admin });
    expect(rev.status).toBe(200);
    expect(rev.json().revoked).toEqual(expect.any(String));
    const r = await call(t.url, 'GET', '/projects', { token });
    expect(r.status).toBe(401);
    expect(r.json().error.message).toContain('revoked');
  });

  it('an expired token', async () => {
    const token = await mintToken(t, 'project:shop', ['pull'], { expires: '1s' });
    expect((await call(t.url, 'GET', '/projects', { token })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1100));
    const r = await call(t.url, 'GET', '/projects', { token });
    expect(r.status).toBe(401);
    expect(r.json().error.message).toContain('expired');
  });
});

describe('minting: never more rights than the minting token', () => {
  it('a project push token cannot mint an admin token (or any token)', async () => {
    const push = await mintToken(t, 'project:shop', ['push', 'pull']);
    for (const body of [
      { scope: 'project:shop', permissions: ['admin'] },
      { scope: 'app:shop/web', permissions: ['pull'] },
    ]) {
      const r = await call(t.url, 'POST', '/api/v1/tokens', { token: push, json: body });
      expect(r.status).toBe(403);
    }
  });

  it('a project admin token mints within its project, never wider or longer-lived', async () => {
    const padmin = await mintToken(t, 'project:shop', ['admin'], { expires: '30d' });
    const ok = await call(t.url, 'POST', '/api/v1/tokens', { token: padmin, json: { scope: 'app:shop/web', permissions: ['pull', 'push'] } });
    expect(ok.status).toBe(201);
    const mintedExpiry = Date.parse(ok.json().expires);
    expect(mintedExpiry).toBeGreaterThan(Date.now() + 29 * 86_400_000);
    for (const body of [
      { scope: 'global', permissions: ['pull'] },
      { scope: 'project:other', permissions: ['pull'] },
      { scope: 'app:shop/web', permissions: ['pull'], expires: '60d' },
    ]) {
      expect((await call(t.url, 'POST', '/api/v1/tokens', { token: padmin, json: body })).status).toBe(403);
    }
  });

  it('an app push token pushes its app through the publish API', async () => {
    const token = await mintToken(t, 'app:shop/web', ['push']);
    await publishFiles(t, 'shop', 'web', 'v2', { 'index.html': 'v2' }, token);
    expect((await call(t.url, 'PUT', '/file/shop/api/v2?path=x', { token, body: 'x' })).status).toBe(403);
  });

  it('rejects unknown scopes and permissions with 400', async () => {
    expect((await call(t.url, 'POST', '/api/v1/tokens', { token: t.admin, json: { scope: 'planet:earth', permissions: ['pull'] } })).status).toBe(400);
    expect((await call(t.url, 'POST', '/api/v1/tokens', { token: t.admin, json: { scope: 'global', permissions: ['fly'] } })).status).toBe(400);
  });
});

describe('token storage and listing', () => {
  it('the secret is stored only as a hash', async () => {
    const token = await mintToken(t, 'global', ['pull']);
    const secret = token.split('_').slice(2).join('_');
    const control = await openControl(t);
    try {
      const rows = await control.cdb.db.selectFrom('tokens').selectAll().execute();
      expect(rows.length).toBeGreaterThan(0);
      for (const r of rows) {
        expect(JSON.stringify(r)).not.toContain(secret);
        expect(r.hash).toMatch(/^sha256:[0-9a-f]{64}$/);
      }
    } finally {
      await control.close();
    }
    // Nor anywhere in the database's files (SQLite) or the store.
    if (t.db.startsWith('sqlite:')) {
      const files = (await readdir(t.storeDir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
      expect(files.some((f) => f.name === 'kk.db')).toBe(true);
      for (const f of files) expect((await readFile(path.join(f.parentPath, f.name))).includes(Buffer.from(secret))).toBe(false);
    }
  });

  it('GET /api/v1/tokens lists tokens without hashes; a scoped admin sees only its scope', async () => {
    const all = await call(t.url, 'GET', '/api/v1/tokens?limit=500', { token: t.admin });
    expect(all.status).toBe(200);
    expect(all.json().items.length).toBeGreaterThan(3);
    for (const item of all.json().items) expect(item.hash).toBeUndefined();
    const padmin = await mintToken(t, 'app:shop/api', ['admin']);
    const mine = await call(t.url, 'GET', '/api/v1/tokens?limit=500', { token: padmin });
    expect(mine.json().items.every((i: { scope: string }) => i.scope === 'app:shop/api')).toBe(true);
  });

  it('every token change is in the audit log', async () => {
    const r = await call(t.url, 'GET', '/api/v1/audit?action=token.revoke', { token: t.admin });
    expect(r.json().items.length).toBeGreaterThan(0);
    expect(r.json().items[0]).toMatchObject({ action: 'token.revoke', token: 'admin' });
  });
});
