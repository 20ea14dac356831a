// Issue 12 acceptance 3 (seed 002) with a real server and two real `kk agent` processes: pause
// both targets, promote v2: no node applies it; resume: both converge and the verify that follows
// each resume says OK. Change one deployed file on one node and verify it: CONFLICT, the
// sync.conflict alarm event, a signed webhook received by an HTTP server here, and that target
// paused again (by system, naming the file); kk target status shows it.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type RunningServer, SIGNATURE_HEADER, signBody, startServer } from '@kk/server';
import { KK_BIN, type Sandbox, cleanEnv, rsyncDifferences, sandbox, writeTree } from './helpers.js';

const admin = `admin-${randomBytes(12).toString('hex')}`;
const FLEET_ENV = { KK_FLEET_HEARTBEAT_MS: '500', KK_FLEET_LEASE_MS: '5000', KK_FLEET_OFFLINE_MS: '5000', KK_FLEET_SWEEP_MS: '200' };
let sb: Sandbox;
let srv: RunningServer;
let hooks: Server;
const received: { body: string; signature: string }[] = [];
const agents: ChildProcess[] = [];
const agentLog: string[] = [];
const saved = { ...process.env };

const api = async (method: string, path: string, body?: unknown) => {
  const r = await fetch(`${srv.url}${path}`, { method, headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : undefined };
};

async function until<T>(what: string, ms: number, fn: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}\nagents:\n${agentLog.join('').split('\n').slice(-20).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  Object.assign(process.env, FLEET_ENV); // read by the fleet routes when the server starts
  sb = await sandbox();
  for (const v of ['v1', 'v2']) await writeTree(sb.path('builds', v), { 'index.html': `<h1>${v}</h1>`, 'conf/app.ini': `version=${v}\n`, [`only-${v}.txt`]: v });
  srv = await startServer({ store: sb.path('store'), listen: '127.0.0.1:0', adminToken: admin, log: false, config: { hasherThreads: 1, webhookPollMs: 100, webhookBackoffMs: 50, webhookBackoffMaxMs: 200 } });
  hooks = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ body: Buffer.concat(chunks).toString(), signature: String(req.headers[SIGNATURE_HEADER] ?? '') });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => hooks.listen(0, '127.0.0.1', () => r()));
  await writeTree(sb.path('ci'), { '.kkartifact.yml': `server_url: ${srv.url}\ntoken: ${admin}\n` });
  for (const v of ['v1', 'v2']) {
    const r = await sb.kk(['push', '-p', 'shop', '-a', 'web', '--version', v, '--path', sb.path('builds', v)], { cwd: sb.path('ci') });
    expect(r.code, r.stderr).toBe(0);
  }
  const reg = (await api('POST', '/api/sync/registration-tokens', { expires: '1h' })).json.token;
  for (const name of ['n1', 'n2']) {
    const a = spawn(process.execPath, [KK_BIN, 'agent', '--server', srv.url, '--name', name, '--registration-token', reg, '--state-dir', sb.path('agents', name), '--poll-wait', '2'], { env: cleanEnv({ KK_STATE_DIR: sb.path('agents', name, 'kk') }), stdio: ['ignore', 'ignore', 'pipe'] });
    a.stderr!.on('data', (d: Buffer) => agentLog.push(`${name}: ${d}`));
    agents.push(a);
  }
  await until('both agents enrolled', 60_000, async () => (await api('GET', '/api/sync/nodes?status=ONLINE')).json.items.length === 2);
}, 180_000);

afterAll(async () => {
  for (const a of agents) a.kill('SIGKILL');
  await new Promise((r) => hooks?.close(r));
  await srv?.close();
  await sb?.cleanup();
  for (const k of Object.keys(FLEET_ENV)) if (saved[k] === undefined) delete process.env[k];
});

it('pause, promote: nothing applied; resume: converge and verify OK; a file changed on one node: CONFLICT, alarm, signed webhook, paused again', async () => {
  const hook = await api('POST', '/api/v1/webhooks', { url: `http://127.0.0.1:${(hooks.address() as { port: number }).port}/kk`, events: ['sync.conflict'], secret: 'a-secret-of-the-receiver' });
  expect(hook.status).toBe(201);
  const ids: string[] = [];
  for (const n of ['n1', 'n2']) ids.push((await api('POST', '/api/sync/targets', { project: 'shop', app: 'web', node: n, path: sb.path('nodes', n, 'site') })).json.id);
  const status = (id: string) => api('GET', `/api/sync/targets/${id}`).then((r) => r.json);
  expect((await api('POST', '/api/v1/promote', { project: 'shop', app: 'web', version: 'v1' })).status).toBe(200);
  await until('both on v1', 90_000, async () => (await Promise.all(ids.map(status))).every((s) => s.target.current_version === 'v1'));

  // Paused: the promote of v2 queues a task per target, and neither node applies it.
  for (const id of ids) expect((await api('POST', `/api/sync/targets/${id}/pause`, { reason: 'upgrading the nodes' })).status).toBe(200);
  expect((await api('POST', '/api/v1/promote', { project: 'shop', app: 'web', version: 'v2' })).status).toBe(200);
  await until('v2 queued on both', 30_000, async () => (await Promise.all(ids.map(status))).every((s) => s.queued?.version === 'v2'));
  await new Promise((r) => setTimeout(r, 3_000)); // several claim rounds of both agents
  for (const n of ['n1', 'n2']) expect(await rsyncDifferences(sb.path('builds', 'v1'), sb.path('nodes', n, 'site'))).toBe('');
  for (const s of await Promise.all(ids.map(status))) expect(s).toMatchObject({ state: 'paused', target: { current_version: 'v1' }, running: null });

  // Resume: one sync, then a verify, on each.
  for (const id of ids) expect((await api('POST', `/api/sync/targets/${id}/resume`)).json.task).toMatchObject({ version: 'v2', source: 'resume' });
  await until('both verified on v2', 90_000, async () => (await Promise.all(ids.map(status))).every((s) => s.verify?.state === 'OK' && s.verify.version === 'v2'));
  for (const n of ['n1', 'n2']) expect(await rsyncDifferences(sb.path('builds', 'v2'), sb.path('nodes', n, 'site'))).toBe('');
  const verified = (await api('GET', '/api/v1/events?since=0&type=sync.verified&limit=500')).json.items;
  expect(verified.map((e: { details: { target: string } }) => e.details.target).sort()).toEqual([...ids].sort());

  // Someone edits a deployed file on n1; a verify finds it.
  await writeFile(sb.path('nodes', 'n1', 'site', 'conf', 'app.ini'), 'version=v2\nhotfix=1\n');
  expect((await api('POST', `/api/sync/targets/${ids[0]}/verify`)).status).toBe(202);
  const s1 = await until('the conflict', 60_000, async () => {
    const s = await status(ids[0]!);
    return s.verify?.state === 'CONFLICT' && s.state === 'paused' ? s : undefined;
  });
  expect(s1.target.paused).toMatchObject({ by: 'system', reason: expect.stringMatching(/^CONFLICT: verify of v2 on node .*conf\/app\.ini \(changed locally/) });
  expect((await status(ids[1]!)).state).toBe('running');
  const alarm = (await api('GET', '/api/v1/events?since=0&type=sync.conflict&limit=500')).json.items;
  expect(alarm).toHaveLength(1);
  expect(alarm[0]).toMatchObject({ project: 'shop', app: 'web', version: 'v2', details: { target: ids[0], code: 'CONFLICT', problems: expect.arrayContaining([expect.objectContaining({ path: 'conf/app.ini', problem: 'content' })]) } });
  const got = await until('the signed webhook', 30_000, async () => received.find((r) => JSON.parse(r.body).type === 'sync.conflict'));
  expect(got.signature).toBe(signBody('a-secret-of-the-receiver', got.body));
  expect(JSON.parse(got.body)).toMatchObject({ id: alarm[0].id, details: { target: ids[0] } });
  // The file is left as the person wrote it, and the CLI shows why the target stopped.
  const st = await sb.kkJson(['target', 'status', '--server', srv.url, '--token', admin, ids[0]!]);
  expect(st.json).toMatchObject({ state: 'paused', verify: { state: 'CONFLICT', error: { code: 'CONFLICT' } }, target: { paused: { by: 'system' } } });
}, 300_000);
