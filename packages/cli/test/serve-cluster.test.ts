// Two `kk serve` processes on one S3 store (s3rver) and one PostgreSQL (issue 11, acceptance 2):
// a token created through one is accepted by the other at once, and revoked through one is
// refused by the other on the next request; a webhook registered on one is delivered exactly
// once for a push through the other; the scheduled retention, which both fire at the same
// moments (a schedule every 3 s), runs once per moment.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type PostgresBackend, type S3rverBackend, postgresUnavailable, s3rverUnavailable, startPostgres, startS3rver } from '@kk/testkit';
import { Control } from '@kk/control';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KK_BIN, type Sandbox, cleanEnv, sandbox, writeTree } from './helpers.js';

const unavailable = postgresUnavailable() ?? s3rverUnavailable();
if (unavailable && process.env.CI) throw new Error(`CI must run the kk serve cluster test: ${unavailable}`);

interface Served {
  url: string;
  child: ChildProcess;
  logs: Record<string, unknown>[];
}

describe.skipIf(!!unavailable)(`two kk serve on one s3 store and one PostgreSQL${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let sb: Sandbox;
  let s3: S3rverBackend;
  let pg: PostgresBackend;
  let db: string;
  let a: Served;
  let b: Served;
  let rx: Server;
  let rxUrl: string;
  const received: { version: string; delivery: string }[] = [];
  const admin = `admin-${randomBytes(12).toString('hex')}`;

  const serve = (config: string): Promise<Served> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [KK_BIN, 'serve', '--store', s3.storeUrl('kk'), '--db', db, '--listen', '127.0.0.1:0', '--config', config], {
        cwd: sb.root,
        env: cleanEnv({ ...s3.env, KK_ADMIN_TOKEN: admin, KK_STATE_DIR: sb.stateDir }),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const logs: Record<string, unknown>[] = [];
      let buf = '';
      let err = '';
      const timer = setTimeout(() => reject(new Error(`kk serve did not listen within 30 s: ${err}`)), 30_000);
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
          buf = buf.slice(nl + 1);
          logs.push(line);
          if (line.msg === 'listening') {
            clearTimeout(timer);
            resolve({ url: String(line.url), child, logs });
          }
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`kk serve exited ${code}: ${err}`));
      });
    });

  const stop = async (s: Served | undefined) => {
    if (!s || s.child.exitCode !== null) return;
    const exited = new Promise((r) => s.child.once('exit', r));
    s.child.kill('SIGTERM');
    const kill = setTimeout(() => s.child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(kill);
  };

  const api = async (s: Served, method: string, path: string, opts: { token?: string; json?: unknown; body?: string } = {}) => {
    const res = await fetch(`${s.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${opts.token ?? admin}`, ...(opts.json !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: opts.json !== undefined ? JSON.stringify(opts.json) : opts.body,
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  };

  beforeAll(async () => {
    sb = await sandbox();
    [s3, pg] = await Promise.all([startS3rver(), startPostgres()]);
    db = await pg.createDatabase();
    await writeFile(sb.path('kk-server.yml'), 'retention_schedule: "*/3 * * * * *"\nretain_versions: 1\nwebhook_poll: 100ms\nwebhook_backoff: 100ms\n');
    // The first start migrates; then both run at once.
    a = await serve(sb.path('kk-server.yml'));
    b = await serve(sb.path('kk-server.yml'));
    rx = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => {
        received.push({ version: JSON.parse(Buffer.concat(parts).toString('utf8')).version, delivery: String(req.headers['x-kk-delivery-id']) });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => rx.listen(0, '127.0.0.1', r));
    rxUrl = `http://127.0.0.1:${(rx.address() as AddressInfo).port}/hook`;
  });
  afterAll(async () => {
    await Promise.all([stop(a), stop(b)]);
    rx?.closeAllConnections();
    await new Promise<void>((r) => (rx ? rx.close(() => r()) : r()));
    await Promise.all([s3?.stop(), pg?.stop()]);
    await sb?.cleanup();
  });

  it('a token created through one is accepted by the other at once, and its revocation through one refused by the other', async () => {
    const created = await api(a, 'POST', '/api/v1/tokens', { json: { scope: 'project:web', permissions: ['push', 'pull'] } });
    expect(created.status).toBe(201);
    expect((await api(b, 'GET', '/api/v1/whoami', { token: created.json.token })).status).toBe(200);
    expect((await api(b, 'DELETE', `/api/v1/tokens/${created.json.id}`)).status).toBe(200);
    expect((await api(a, 'GET', '/api/v1/whoami', { token: created.json.token })).status).toBe(401);
  });

  it('a webhook registered on one is delivered exactly once for a push through the other', async () => {
    expect((await api(a, 'POST', '/webhooks', { json: { name: 'ci', url: rxUrl, events: ['push'] } })).status).toBe(201);
    await writeTree(sb.path('src'), { 'index.html': 'hello' });
    await writeTree(sb.path('ci'), { '.kkartifact.yml': `server_url: ${b.url}\ntoken: ${admin}\n` });
    const pushed = await new Promise<number>((resolve) => {
      const c = spawn(process.execPath, [KK_BIN, 'push', '-p', 'web', '-a', 'site', '--version', '1', '--path', sb.path('src')], { cwd: sb.path('ci'), env: cleanEnv({ KK_STATE_DIR: sb.stateDir }), stdio: 'ignore' });
      c.on('exit', (code) => resolve(code ?? 1));
    });
    expect(pushed).toBe(0);
    for (let i = 0; i < 200 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 1_000)); // both dispatchers poll every 100 ms
    expect(received).toHaveLength(1);
    expect(received[0]!.version).toBe('1');
  });

  it('the scheduled retention, fired by both at the same moments, runs once per moment', async () => {
    const since = new Date().toISOString();
    // Two more versions: the runs delete down to one.
    for (const v of ['2', '3']) {
      const r = await fetch(`${a.url}/file/web/site/${v}?path=index.html`, { method: 'PUT', headers: { authorization: `Bearer ${admin}` }, body: `v${v}` });
      expect(r.status).toBe(201);
      expect((await api(a, 'POST', '/upload/finish', { json: { project: 'web', app: 'site', version: v } })).status).toBe(201);
    }
    const control = await Control.open(db);
    try {
      const doneRuns = async () =>
        (await control.cdb.db.selectFrom('job_runs').select(['slot', 'attempts', 'state', 'started']).where('job', '=', 'retention').execute()).filter((r) => r.state === 'done');
      const before = (await doneRuns()).length;
      let runs = await doneRuns();
      for (let i = 0; i < 300 && runs.length < before + 3; i++) {
        await new Promise((r) => setTimeout(r, 100));
        runs = await doneRuns();
      }
      expect(runs.length).toBeGreaterThanOrEqual(before + 3);
      // Every slot was claimed once, by one instance, and never taken over.
      expect(runs.every((r) => Number(r.attempts) === 1)).toBe(true);
      expect(new Set(runs.map((r) => r.slot)).size).toBe(runs.length);
      // One run per slot: the audit log has one retention entry per done slot, and the two
      // processes' logs one `retention run` line per slot between them, from both instances.
      await new Promise((r) => setTimeout(r, 500));
      const audit = await control.audit.query({ action: 'retention' }, { limit: 500, offset: 0, order: 'asc' });
      const finished = (await doneRuns()).length;
      expect(audit.total).toBe(finished);
      const lines = (s: Served) => s.logs.filter((l) => l.msg === 'retention run' && l.trigger === 'schedule').length;
      expect(lines(a) + lines(b)).toBe(finished);
      // The versions put before these runs were cut down to the newest, each deleted once.
      const deleted = await control.audit.query({ action: 'delete', project: 'web', since }, { limit: 500, offset: 0, order: 'asc' });
      expect(deleted.items.map((e) => e.version).sort()).toEqual(['1', '2']);
    } finally {
      await control.close();
    }
  });
});
