// kk serve's /ui (routes/ui.ts) and CORS, over real HTTP: cache headers (hashed assets immutable,
// index.html no-cache), the CSP, deep links answered with index.html, missing assets 404, the
// built bundle under 100 KB gzip; CORS only for the configured origins, preflights answered.
import { request } from 'node:http';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningServer, parseServerConfig, startServer } from '@kk/server';
import { WEB_DIR, ensureBuilt } from './browser.js';

function rawStatus(base: string, path: string): Promise<number> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET' }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

const ADMIN = 'admin-web-serve-0123456789abcdef';
const UI_ORIGIN = 'http://127.0.0.1:4173';

describe('kk serve /ui and CORS', () => {
  let root: string;
  let srv: RunningServer;
  let asset: string;

  beforeAll(async () => {
    ensureBuilt();
    asset = (await readdir(join(WEB_DIR, 'dist', 'assets'))).find((f) => f.endsWith('.js'))!;
    root = await mkdtemp(join(tmpdir(), 'kk-web-serve-'));
    srv = await startServer({ store: join(root, 'store'), listen: '127.0.0.1:0', adminToken: ADMIN, log: false, config: { hasherThreads: 1, corsOrigins: [UI_ORIGIN] } });
  }, 60_000);
  afterAll(async () => {
    await srv?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('serves the built UI with cache headers, a strict CSP and deep links', async () => {
    const redirect = await fetch(`${srv.url}/ui`, { redirect: 'manual' });
    expect([redirect.status, redirect.headers.get('location')]).toEqual([308, '/ui/']);
    const index = await fetch(`${srv.url}/ui/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('cache-control')).toBe('no-cache');
    expect(index.headers.get('content-security-policy')).toBe("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    const html = await index.text();
    expect(html).toBe(await readFile(join(WEB_DIR, 'dist', 'index.html'), 'utf8'));
    // Nothing inline: every script and stylesheet is a file under assets/.
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>|<style|style=/);
    expect(html).toContain(`./assets/${asset}`);
    const js = await fetch(`${srv.url}/ui/assets/${asset}`, { headers: { 'accept-encoding': 'gzip' } });
    expect([js.status, js.headers.get('cache-control'), js.headers.get('content-type')]).toEqual([200, 'public, max-age=31536000, immutable', 'text/javascript; charset=utf-8']);
    expect(Buffer.from(await js.arrayBuffer()).equals(await readFile(join(WEB_DIR, 'dist', 'assets', asset)))).toBe(true);
    // A deep link is the SPA; a missing asset is not.
    const deep = await fetch(`${srv.url}/ui/apps/shop/web`);
    expect([deep.status, await deep.text()]).toEqual([200, html]);
    expect((await fetch(`${srv.url}/ui/assets/missing-0000.js`)).status).toBe(404);
    // A path out of dist/ never reaches the file system (sent raw: fetch would normalize it).
    for (const raw of ['/ui/%2e%2e/package.json', '/ui/../package.json', '/ui/assets/..%2f..%2fpackage.json']) expect([raw, await rawStatus(srv.url, raw)]).toEqual([raw, 400]);
    // Acceptance 3: the JS bundle is under 100 KB gzip.
    let gz = 0;
    for (const f of await readdir(join(WEB_DIR, 'dist', 'assets'))) if (f.endsWith('.js')) gz += gzipSync(await readFile(join(WEB_DIR, 'dist', 'assets', f)), { level: 9 }).length;
    expect(gz).toBeLessThan(100_000);
  });

  it('answers CORS for configured origins only', async () => {
    const pre = await fetch(`${srv.url}/api/v1/promote`, { method: 'OPTIONS', headers: { origin: UI_ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe(UI_ORIGIN);
    expect(pre.headers.get('access-control-allow-methods')).toContain('POST');
    expect(pre.headers.get('access-control-allow-headers')).toContain('authorization');
    const who = await fetch(`${srv.url}/api/v1/whoami`, { headers: { origin: UI_ORIGIN, authorization: `Bearer ${ADMIN}` } });
    expect([who.status, who.headers.get('access-control-allow-origin')]).toEqual([200, UI_ORIGIN]);
    // Another origin: no CORS headers (the browser withholds the answer), its preflight refused.
    const other = await fetch(`${srv.url}/api/v1/whoami`, { headers: { origin: 'http://127.0.0.1:9', authorization: `Bearer ${ADMIN}` } });
    expect([other.status, other.headers.get('access-control-allow-origin')]).toEqual([200, null]);
    const otherPre = await fetch(`${srv.url}/api/v1/promote`, { method: 'OPTIONS', headers: { origin: 'http://127.0.0.1:9', 'access-control-request-method': 'POST' } });
    expect(otherPre.status).toBe(403);
    // The config file's key.
    expect(parseServerConfig('cors_origins: [http://127.0.0.1:4173, "*"]\n').config.corsOrigins).toEqual([UI_ORIGIN, '*']);
    expect(() => parseServerConfig('cors_origins: [http://127.0.0.1:4173/ui]\n')).toThrow(/not an origin/);
  });
});
