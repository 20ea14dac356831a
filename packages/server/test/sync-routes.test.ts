// The fleet routes (routes/sync.ts) over a real server on port 0, with a hand-rolled agent: every
// refusal names its cause (issue 12 acceptance 5: wrong registration token 401, a node token
// used for another node 403, a bad target path 400, a report from a stale attempt 423), and the
// happy path: enrol, heartbeat, long-poll, report, pause/resume, manual sync, tasks paged.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Store, createHasher, createMemoryDriver, push } from '@kk/core';
import { KkServer, createKkServer } from '../src/index.js';

const admin = 'admin-sync-routes-test-0123456789';
let dir: string;
let server: KkServer;
let url: string;

async function call(method: string, path: string, body?: unknown, token: string = admin) {
  const r = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : undefined };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kk-sync-routes-'));
  const store = await Store.open(createMemoryDriver(), { create: true });
  const hasher = createHasher({ threads: 1 });
  for (const v of ['v1', 'v2']) {
    await mkdir(join(dir, v), { recursive: true });
    await writeFile(join(dir, v, 'index.html'), v);
    await push({ store, hasher, project: 'shop', app: 'web', version: v, dir: join(dir, v), stateDir: join(dir, 'state') });
  }
  await hasher.close();
  await store.setChannel('shop', 'web', 'promoted', 'v1');
  server = await createKkServer({ store, adminToken: admin, log: false, db: `sqlite://${join(dir, 'kk.db')}` });
  url = await server.listen('127.0.0.1:0');
});

afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

it('enrolment, node tokens and their scope; refusals name the cause', async () => {
  const reg = await call('POST', '/api/sync/registration-tokens', { expires: '1h' });
  expect(reg.status).toBe(201);
  const wrong = await call('POST', '/api/sync/agent/enrol', { registration_token: 'kkr_0123456789abcdef0123_' + 'x'.repeat(43), name: 'n0' }, '');
  expect(wrong.status).toBe(401);
  expect(wrong.json.error).toMatchObject({ code: 'AUTH', message: expect.stringMatching(/registration token is not valid/) });
  const a = await call('POST', '/api/sync/agent/enrol', { registration_token: reg.json.token, name: 'n1', tags: { role: 'web' } }, '');
  const b = await call('POST', '/api/sync/agent/enrol', { registration_token: reg.json.token, name: 'n2' }, '');
  expect(a.status).toBe(201);
  expect(a.json).toMatchObject({ node: { name: 'n1', status: 'ONLINE', tags: { role: 'web' } }, token: expect.stringMatching(/^kkn_/), store_token: expect.stringMatching(/^kk_/) });
  // A's token may not heartbeat for B.
  const other = await call('POST', `/api/sync/nodes/${b.json.node.id}/heartbeat`, {}, a.json.token);
  expect(other.status).toBe(403);
  expect(other.json.error.message).toMatch(/belongs to node/);
  expect((await call('POST', `/api/sync/nodes/${a.json.node.id}/heartbeat`, {}, 'kkn_nope')).status).toBe(401);
  const hb = await call('POST', `/api/sync/nodes/${a.json.node.id}/heartbeat`, { info: { v: 1 } }, a.json.token);
  expect(hb).toMatchObject({ status: 200, json: { interval_ms: expect.any(Number), lease_ms: expect.any(Number) } });
  // The store token reads versions (pull) and nothing more.
  expect((await call('GET', '/api/v1/projects/shop/apps/web/versions', undefined, a.json.store_token)).status).toBe(200);
  expect((await call('POST', '/api/sync/registration-tokens', {}, a.json.store_token)).status).toBe(403);
  // Nodes: list with a tag filter, test, drain.
  const list = await call('GET', '/api/sync/nodes?tag=role=web');
  expect(list.json.items.map((n: { name: string }) => n.name)).toEqual(['n1']);
  expect(list.json.seq).toBeGreaterThan(0);
  expect((await call('POST', `/api/sync/nodes/${a.json.node.id}/test`)).json).toMatchObject({ ok: true, status: 'ONLINE' });
  expect((await call('POST', '/api/sync/nodes', { nodes: [{ name: 's1', kind: 'ssh', address: 'deploy@10.0.0.9' }, { name: 's2', kind: 'ssh', address: 'deploy@10.0.0.10' }] })).status).toBe(201);
  expect((await call('POST', '/api/sync/nodes', { name: 's1', kind: 'ssh', address: 'x' })).json.error.message).toMatch(/already taken: s1/);
});

it('targets, claims, reports with fencing, pause/resume and tasks', async () => {
  const reg = await call('POST', '/api/sync/registration-tokens', {});
  const n = (await call('POST', '/api/sync/agent/enrol', { registration_token: reg.json.token, name: 'w1' }, '')).json;
  const bad = await call('POST', '/api/sync/targets', { project: 'shop', app: 'web', node: 'w1', path: 'relative/dir' });
  expect(bad.status).toBe(400);
  expect(bad.json.error).toMatchObject({ code: 'UNSAFE_PATH', message: expect.stringMatching(/absolute, normalized/) });
  const t = await call('POST', '/api/sync/targets', { project: 'shop', app: 'web', node: 'w1', path: '/srv/shop' });
  expect(t.status).toBe(201);
  // Nothing queued yet: the long-poll answers 204 after its wait.
  const none = await fetch(`${url}/api/sync/agent/claim?wait_ms=50`, { method: 'POST', headers: { authorization: `Bearer ${n.token}` } });
  expect(none.status).toBe(204);
  // kk sync: what the target follows (promoted = v1).
  const s = await call('POST', '/api/sync/sync', { project: 'shop' });
  expect(s.json.items.map((x: { version: string; state: string }) => [x.version, x.state])).toEqual([['v1', 'PENDING']]);
  const claimed = await call('POST', '/api/sync/agent/claim?wait_ms=1000', {}, n.token);
  expect(claimed.status).toBe(200);
  expect(claimed.json).toMatchObject({ task: { version: 'v1', manifest: expect.stringMatching(/^sha256:/) }, target: { path: '/srv/shop', strategy: 'mirror' }, attempt_id: expect.any(String) });
  const tid = claimed.json.task.id;
  expect((await call('POST', `/api/sync/tasks/${tid}/report`, { attempt_id: claimed.json.attempt_id, stage: 'fetch', logs: [{ line: 'hello' }] }, n.token)).json).toEqual({ task: tid, state: 'RUNNING' });
  const stale = await call('POST', `/api/sync/tasks/${tid}/report`, { attempt_id: 'at-0000', outcome: { ok: true, result: {} } }, n.token);
  expect(stale.status).toBe(423);
  expect(stale.json.error).toMatchObject({ code: 'LOCKED', message: expect.stringMatching(/no longer current/) });
  expect((await call('POST', `/api/sync/tasks/${tid}/report`, { attempt_id: claimed.json.attempt_id, outcome: { ok: true, result: { files_added: 1 } } }, n.token)).json.state).toBe('SUCCESS');
  const got = await call('GET', `/api/sync/tasks/${tid}`);
  expect(got.json).toMatchObject({ state: 'SUCCESS', logs: [{ line: 'hello' }], result: { files_added: 1 } });
  // Pause: a promote queues a task, nothing is claimed; resume runs one sync.
  const target = t.json.id;
  expect((await call('POST', `/api/sync/targets/${target}/pause`, {})).status).toBe(400);
  expect((await call('POST', `/api/sync/targets/${target}/pause`, { reason: 'upgrading' })).json.paused).toMatchObject({ reason: 'upgrading', by: 'admin' });
  await call('POST', '/api/v1/promote', { project: 'shop', app: 'web', version: 'v2' });
  await server.sync.tick(); // the follower turns the promote into a task
  await server.sync.tick();
  const queued = await call('GET', `/api/sync/tasks?project=shop&status=PENDING`);
  expect(queued.json.items.map((x: { version: string }) => x.version)).toEqual(['v2']);
  expect((await fetch(`${url}/api/sync/agent/claim?wait_ms=50`, { method: 'POST', headers: { authorization: `Bearer ${n.token}` } })).status).toBe(204);
  const st = await call('GET', `/api/sync/targets/${target}`);
  expect(st.json).toMatchObject({ state: 'paused', target: { current_version: 'v1' }, queued: { version: 'v2' } });
  const resumed = await call('POST', `/api/sync/targets/${target}/resume`);
  expect(resumed.json.task).toMatchObject({ version: 'v2' });
  expect((await call('POST', '/api/sync/agent/claim?wait_ms=1000', {}, n.token)).json.task.version).toBe('v2');
  // Tasks: paged, filtered, cancel.
  const p1 = await call('GET', '/api/sync/tasks?project=shop&limit=1');
  expect(p1.json.items).toHaveLength(1);
  expect(p1.json.next).toEqual(expect.any(String));
  const p2 = await call('GET', `/api/sync/tasks?project=shop&limit=10&cursor=${p1.json.next}`);
  expect(p2.json.items.map((x: { id: string }) => x.id)).not.toContain(p1.json.items[0].id);
  const running = (await call('GET', '/api/sync/tasks?project=shop&status=RUNNING')).json.items[0];
  expect((await call('POST', `/api/sync/tasks/${running.id}/cancel`, { reason: 'wrong version' })).json).toMatchObject({ state: 'CANCELED', error: { code: 'CANCELED' } });
  expect((await call('POST', `/api/sync/tasks/${running.id}/retry`)).json.state).toBe('PENDING');
  expect((await call('PUT', '/api/sync/projects/shop', { max_parallel_nodes: 2 })).json.max_parallel_nodes).toBe(2);
  expect((await call('GET', '/api/sync/tasks?status=BOGUS')).status).toBe(400);
});
