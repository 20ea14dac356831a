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
  expect(a.json).toMatchObject({ node: { name: 'n1', status: 'ONLINE', tags: { role: 'web' } }, token: expect.stringMatching(/^kkn_/) });
  expect(a.json.store_token).toBeUndefined(); // each claim brings a scoped one
  // A's token may not heartbeat for B.
  const other = await call('POST', `/api/sync/nodes/${b.json.node.id}/heartbeat`, {}, a.json.token);
  expect(other.status).toBe(403);
  expect(other.json.error.message).toMatch(/belongs to node/);
  expect((await call('POST', `/api/sync/nodes/${a.json.node.id}/heartbeat`, {}, 'kkn_nope')).status).toBe(401);
  const hb = await call('POST', `/api/sync/nodes/${a.json.node.id}/heartbeat`, { info: { v: 1 } }, a.json.token);
  expect(hb).toMatchObject({ status: 200, json: { interval_ms: expect.any(Number), lease_ms: expect.any(Number) } });
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

it('each claim brings a pull token scoped to its app (revoked with the next claim and with the node); verify, CONFLICT, a pull on a paused target', async () => {
  const hook = await call('POST', '/api/v1/webhooks', { url: 'http://127.0.0.1:9/hook', events: ['sync.conflict', 'sync.paused_pull', 'target.paused', 'sync.verified'] });
  expect(hook.status).toBe(201);
  const reg = await call('POST', '/api/sync/registration-tokens', {});
  const n = (await call('POST', '/api/sync/agent/enrol', { registration_token: reg.json.token, name: 'v1node' }, '')).json;
  // An agent that allows only some roots says so in its heartbeats; a target outside them is refused.
  expect((await call('POST', `/api/sync/nodes/${n.node.id}/heartbeat`, { info: { allowed_roots: ['/srv'] } }, n.token)).status).toBe(200);
  const outside = await call('POST', '/api/sync/targets', { project: 'shop', app: 'web', node: 'v1node', path: '/etc/shop' });
  expect(outside.status).toBe(400);
  expect(outside.json.error).toMatchObject({ code: 'UNSAFE_PATH', message: '/etc/shop is outside the directories node v1node allows (/srv)' });
  const target = (await call('POST', '/api/sync/targets', { project: 'shop', app: 'web', node: 'v1node', path: '/srv/verify' })).json.id;
  const finish = async (claim: Record<string, any>, outcome: unknown) =>
    (await call('POST', `/api/sync/tasks/${claim.task.id}/report`, { attempt_id: claim.attempt_id, outcome }, n.token)).json.state;
  // Resume of a target that is not paused: a sync; resume after a pause: sync, then a verify.
  await call('POST', '/api/sync/sync', { target });
  const c1 = (await call('POST', '/api/sync/agent/claim?wait_ms=1000', {}, n.token)).json;
  expect(c1.store_token).toMatch(/^kk_/);
  expect((await call('GET', '/api/v1/projects/shop/apps/web/versions', undefined, c1.store_token)).status).toBe(200);
  expect((await call('POST', '/api/v1/promote', { project: 'shop', app: 'web', version: 'v1' }, c1.store_token)).status).toBe(403);
  expect((await call('GET', '/api/v1/projects/other/apps/web/versions', undefined, c1.store_token)).status).toBe(403);
  expect((await call('POST', '/api/sync/registration-tokens', {}, c1.store_token)).status).toBe(403);
  expect(await finish(c1, { ok: true, result: { files_added: 1 } })).toBe('SUCCESS');
  expect((await call('POST', `/api/sync/targets/${target}/pause`, { reason: 'upgrade' })).status).toBe(200);
  // A pull recorded with this node's token while its target is paused raises the alarm.
  const manifest = (await call('GET', '/api/v1/projects/shop/apps/web/versions/v1')).json.manifest;
  expect((await call('POST', '/api/v1/pulls', { project: 'shop', app: 'web', version: 'v1', manifest }, c1.store_token)).status).toBe(201);
  await server.sync.tick();
  const alarm = (await call('GET', '/api/v1/events?since=0&type=sync.paused_pull&limit=500')).json.items;
  expect(alarm).toHaveLength(1);
  expect(alarm[0]).toMatchObject({ project: 'shop', app: 'web', details: { target, node: n.node.id, paused_reason: 'upgrade' } });
  const resumed = (await call('POST', `/api/sync/targets/${target}/resume`)).json;
  expect(resumed.task).toMatchObject({ source: 'resume' });
  const c2 = (await call('POST', '/api/sync/agent/claim?wait_ms=1000', {}, n.token)).json;
  // The previous claim's token is revoked by this one.
  expect((await call('GET', '/api/v1/projects/shop/apps/web/versions', undefined, c1.store_token)).status).toBe(401);
  expect(await finish(c2, { ok: true, result: {} })).toBe('SUCCESS');
  const v1 = (await call('POST', '/api/sync/agent/claim?wait_ms=1000', {}, n.token)).json;
  expect(v1.task).toMatchObject({ source: 'verify', version: 'v2' }); // promoted is v2 since the test before
  expect(await finish(v1, { ok: true, result: { verified: true, files_checked: 1 } })).toBe('SUCCESS');
  expect((await call('GET', `/api/sync/targets/${target}`)).json).toMatchObject({ state: 'running', verify: { state: 'OK', version: 'v2' } });
  // On demand: a verify that finds a changed file is a CONFLICT; the target is paused again.
  expect((await call('POST', `/api/sync/targets/${target}/verify`)).status).toBe(202);
  const v2 = (await call('POST', '/api/sync/agent/claim?wait_ms=1000', {}, n.token)).json;
  expect(await finish(v2, { ok: false, code: 'CONFLICT', reason: '1 difference(s): index.html (changed locally)', result: { problems: [{ path: 'index.html', problem: 'content' }] } })).toBe('FAILED');
  const st = (await call('GET', `/api/sync/targets/${target}`)).json;
  expect(st).toMatchObject({ state: 'paused', verify: { state: 'CONFLICT', error: { code: 'CONFLICT' } }, target: { paused: { by: 'system', reason: expect.stringMatching(/^CONFLICT: verify of v2 .*index\.html \(changed locally\)/) } } });
  const conflict = (await call('GET', '/api/v1/events?since=0&type=sync.conflict&limit=500')).json.items;
  expect(conflict).toHaveLength(1);
  expect(conflict[0].details).toMatchObject({ target, code: 'CONFLICT', problems: [{ path: 'index.html' }] });
  // Webhooks were queued for the alarm types, signed like every delivery.
  const deliveries = (await call('GET', `/api/v1/webhooks/${hook.json.id}/deliveries?limit=50`)).json.items.map((d: { event: string }) => d.event).sort();
  expect(deliveries).toEqual(['sync.conflict', 'sync.paused_pull', 'sync.verified', 'target.paused', 'target.paused']);
  expect((await call('POST', `/api/sync/targets/${target}/verify`)).json.error.code).toBe('PAUSED');
  // Removing the node revokes its store token.
  expect((await call('DELETE', `/api/sync/nodes/${n.node.id}?force=1`)).status).toBe(200);
  expect((await call('GET', '/api/v1/projects/shop/apps/web/versions', undefined, v2.store_token)).status).toBe(401);
});
