// `kk audit` against a real server (acceptance 5 of issue 11) and `kk serve --db` refusing bad
// control databases (acceptance 6): one line, exit 2 for a malformed URL, 1 for an unreachable
// or too-new database, and nothing written.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Control } from '@kk/control';
import { startServer, type RunningServer } from '@kk/server';
import { type Sandbox, sandbox, writeTree } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

describe('kk audit', () => {
  let srv: RunningServer;
  const admin = `admin-${randomBytes(8).toString('hex')}`;
  let ciToken: string;
  beforeAll(async () => {
    srv = await startServer({ store: sb.path('server-store'), listen: '127.0.0.1:0', adminToken: admin, log: false, config: { hasherThreads: 1 } });
    const r = await fetch(`${srv.url}/api/v1/tokens`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ scope: 'project:shop', permissions: ['push', 'pull'] }) });
    ciToken = ((await r.json()) as { token: string }).token;
    await writeTree(sb.path('src'), { 'index.html': 'hello', 'app.js': 'x'.repeat(5000) });
    await writeTree(sb.path('ci'), { '.kkartifact.yml': `server_url: ${srv.url}\ntoken: ${ciToken}\n` });
    const cwd = sb.path('ci');
    expect((await sb.kk(['push', '-p', 'shop', '-a', 'web', '--version', '1', '--path', sb.path('src')], { cwd })).code).toBe(0);
    expect((await sb.kk(['pull', '-p', 'shop', '-a', 'web', '--version', '1', '--path', sb.path('deploy')], { cwd })).code).toBe(0);
    expect((await sb.kk(['push', '-p', 'other', '-a', 'web', '--version', '1', '--path', sb.path('src')], { cwd: sb.root, env: { KK_SERVER: srv.url } })).code).not.toBe(0);
  });
  afterAll(async () => srv?.close());

  it('--project P --since 1h --json lists the push and the pull with token id and agent id', async () => {
    const r = await sb.kkJson(['audit', '--server', srv.url, '--token', admin, '--project', 'shop', '--since', '1h']);
    expect(r.code, r.stderr).toBe(0);
    const tokenId = ciToken.split('_')[1];
    const agentId = (await readFile(join(sb.stateDir, 'agent-id'), 'utf8')).trim();
    // Newest first: the pull, the push, and before them the creation of the project's token.
    expect(r.json.entries.map((e: { action: string }) => e.action)).toEqual(['pull', 'push', 'token.create']);
    const [pull, pushed] = r.json.entries;
    for (const e of [pull, pushed]) expect(e).toMatchObject({ project: 'shop', app: 'web', version: '1', token: tokenId, agent: expect.stringMatching(/\S/) });
    // The pull reports this machine's agent id; the push names its client (X-Kk-Agent).
    expect(pull.agent).toBe(`${hostname()}/${agentId}`);
    expect(pushed.manifest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(r.json.total).toBe(3);
    expect(r.json.next_cursor).toBeNull();
  });

  it('filters by action and token, prints a table, and pages with --limit/--cursor', async () => {
    const t = await sb.kk(['audit', '--server', srv.url, '--token', admin, '--action', 'push', '--token-id', ciToken.split('_')[1]!]);
    expect(t.code, t.stderr).toBe(0);
    const lines = t.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^TIME\s+ACTION\s+PROJECT\/APP\s+VERSION\s+TOKEN\s+AGENT\s+ADDRESS$/);
    expect(lines.slice(1)).toHaveLength(1);
    expect(lines[1]).toMatch(/push\s+shop\/web\s+1\s+[0-9a-f]{20}/);
    const p1 = await sb.kkJson(['audit', '--server', srv.url, '--token', admin, '--project', 'shop', '--limit', '1']);
    expect(p1.json.entries).toHaveLength(1);
    expect(p1.json.next_cursor).toEqual(expect.any(Number));
    const p2 = await sb.kkJson(['audit', '--server', srv.url, '--token', admin, '--project', 'shop', '--limit', '1', '--cursor', String(p1.json.next_cursor)]);
    expect(p2.json.entries.map((e: { action: string }) => e.action)).toEqual(['push']);
    const rest = await sb.kkJson(['audit', '--server', srv.url, '--token', admin, '--project', 'shop', '--limit', '1', '--all']);
    expect(rest.json.entries.map((e: { action: string }) => e.action)).toEqual(['pull', 'push', 'token.create']);
    const none = await sb.kk(['audit', '--server', srv.url, '--token', admin, '--project', 'shop', '--until', '2d']);
    expect(none.stdout.trim()).toBe('no audit entries match');
    const bad = await sb.kk(['audit', '--server', srv.url, '--token', admin, '--since', 'yesterday']);
    expect(bad.code).toBe(2);
  });
});

describe('kk serve --db refuses a bad control database', () => {
  const serve = (store: string, db: string) => sb.kk(['serve', '--store', store, '--db', db, '--listen', '127.0.0.1:0']);

  it.each([
    ['mysql://kk@localhost/kk', /unknown scheme/],
    ['sqlite://host/kk.db', /no host/],
    ['postgres://kk:pw@db.example:5432', /no database name/],
  ])('%s: one line, exit 2, nothing written', async (db, why) => {
    const store = sb.path(`bad-${randomBytes(3).toString('hex')}`);
    const r = await serve(store, db);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')[0]).toMatch(why);
    expect(r.stderr).toMatch(/^kk: control database URL/);
    expect(r.stderr).not.toContain(':pw@');
    expect(existsSync(store)).toBe(false);
  });

  it('an unreachable PostgreSQL: exit 1, nothing written', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const store = sb.path('unreachable');
    const r = await serve(store, `postgres://kk:secret@127.0.0.1:${port}/kk`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^kk: cannot reach the control database postgres:\/\/kk:\*\*\*@127\.0\.0\.1:\d+\/kk/);
    expect(r.stderr).not.toContain('secret');
    expect(existsSync(store)).toBe(false);
  });

  it('a database whose schema is newer than this kk: refuses to start', async () => {
    await mkdir(sb.path('newer'), { recursive: true });
    const db = `sqlite://${sb.path('newer', 'kk.db')}`;
    const c = await Control.open(db);
    await c.cdb.db.insertInto('kk_schema').values({ version: 99, name: 'future', applied: new Date().toISOString() }).execute();
    await c.close();
    const store = sb.path('newer-store');
    const r = await serve(store, db);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^kk: the control database .* has schema version 99, newer than this kk knows/);
    expect(existsSync(store)).toBe(false);
  });
});
