// The deploy routes (routes/deploy.ts) over a real server on port 0, with a hand-rolled agent
// speaking HTTP with its node token: 202 + Location, Idempotency-Key, 409 naming the active deploy,
// 400 naming the field, who may deploy what, the long-poll claim, reports and the callback fenced
// by attempt, status history, cursor-paged lists, manual rollback and the docker monitor.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Store, createMemoryDriver } from '@kk/core';
import { KkServer, createKkServer } from '../src/index.js';

const admin = 'admin-deploy-routes-test-0123456789';
let dir: string;
let server: KkServer;
let url: string;

async function call(method: string, path: string, body?: unknown, token: string = admin, headers: Record<string, string> = {}) {
  const r = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await r.text();
  return { status: r.status, headers: r.headers, json: text ? JSON.parse(text) : undefined };
}

async function enrol(name: string): Promise<{ id: string; token: string }> {
  const reg = await call('POST', '/api/sync/registration-tokens', {});
  const n = (await call('POST', '/api/sync/agent/enrol', { registration_token: reg.json.token, name }, '')).json;
  return { id: n.node.id, token: n.token };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kk-deploy-routes-'));
  const store = await Store.open(createMemoryDriver(), { create: true });
  server = await createKkServer({ store, adminToken: admin, log: false, db: `sqlite://${join(dir, 'kk.db')}` });
  url = await server.listen('127.0.0.1:0');
});

afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

it('create: 400 naming the field, 202 + Location, Idempotency-Key replays, 409 naming the active deploy; who may deploy what', async () => {
  const n = await enrol('d1');
  const missing = await call('POST', '/api/deploy/shell', { node: 'd1' });
  expect(missing.status).toBe(400);
  expect(missing.json.error).toMatchObject({ message: 'script is required', details: { field: 'script' } });
  const badHealth = await call('POST', '/api/deploy/kk', { node: 'd1', project: 'shop', app: 'web', version: 'v1', path: '/srv/web', health: { type: 'http' } });
  expect(badHealth.json.error).toMatchObject({ details: { field: 'health.port' } });
  const rel = await call('POST', '/api/deploy/tar', { node: 'd1', file: '/tmp/x.tar.gz', path: 'srv/app' });
  expect(rel).toMatchObject({ status: 400, json: { error: { code: 'UNSAFE_PATH', details: { field: 'path' } } } });
  const big = await call('POST', '/api/deploy/shell', { node: 'd1', script: 'x'.repeat(100 * 1024 + 1) });
  expect(big.json.error.message).toMatch(/over the 102400-byte limit/);
  expect((await call('POST', '/api/deploy/shell', { node: 'nope', script: 'true' })).status).toBe(404);

  // A deploy token over shop may deploy shop's kk versions, not run scripts; promote or pull tokens nothing.
  const deployer = (await server.control.tokens.mint({ scope: { kind: 'project', project: 'shop' }, permissions: ['deploy'] }, 'test')).token;
  const promoteOnly = (await server.control.tokens.mint({ scope: { kind: 'global' }, permissions: ['promote'] }, 'test')).token;
  expect((await call('POST', '/api/deploy/shell', { node: 'd1', script: 'true' }, promoteOnly)).status).toBe(403);
  const pull = (await server.control.tokens.mint({ scope: { kind: 'global' }, permissions: ['pull'] }, 'test')).token;
  expect((await call('POST', '/api/deploy/shell', { node: 'd1', script: 'true' }, deployer)).status).toBe(403);
  expect((await call('POST', '/api/deploy/kk', { node: 'd1', project: 'other', app: 'web', version: 'v1', path: '/srv/o' }, deployer)).status).toBe(403);
  expect((await call('POST', '/api/deploy/kk', { node: 'd1', project: 'shop', app: 'web', version: 'v1', path: '/srv/web' }, pull)).status).toBe(403);

  const body = { node: 'd1', project: 'shop', app: 'web', version: 'v1', path: '/srv/web', health: { type: 'http', port: 8080, path: '/health', retries: 1 } };
  const one = await call('POST', '/api/deploy/kk', body, deployer, { 'idempotency-key': 'k-1' });
  expect(one.status).toBe(202);
  expect(one.headers.get('location')).toBe(`/api/deploy/${one.json.id}`);
  expect(one.json).toMatchObject({ status: 'pending', node: n.id, deploy_type: 'kk', command_type: 'deploy.kk', version: 'v1', spec: { type: 'kk', health: { type: 'http', port: 8080, path: '/health', retries: 1 } } });
  const again = await call('POST', '/api/deploy/kk', body, deployer, { 'idempotency-key': 'k-1' });
  expect(again).toMatchObject({ status: 202, json: { id: one.json.id } });
  expect(again.headers.get('idempotent-replayed')).toBe('true');
  const busy = await call('POST', '/api/deploy/shell', { node: 'd1', script: 'true' });
  expect(busy.status).toBe(409);
  expect(busy.json.error).toMatchObject({ code: 'LOCKED', details: { active: one.json.id } });
  expect(busy.json.error.message).toContain(one.json.id);
  expect((await call('GET', `/api/deploy/${one.json.id}`, undefined, deployer)).json).toMatchObject({ id: one.json.id, location: `/api/deploy/${one.json.id}` });
  expect((await call('GET', `/api/deploy/${one.json.id}`, undefined, pull)).status).toBe(403);
});

it('the agent: long-poll claim, reports and callback fenced by attempt and node; history, logs, list, rollback, docker monitor', async () => {
  const a = await enrol('a1');
  const b = await enrol('b1');
  // Nothing pending: 204 after the wait.
  expect((await call('POST', '/api/deploy/agent/claim?wait_ms=0', {}, a.token)).status).toBe(204);
  // A long-poll that is waiting when the deploy is created gets it.
  const polling = call('POST', '/api/deploy/agent/claim?wait_ms=20000', {}, a.token);
  await new Promise((r) => setTimeout(r, 200));
  const d = (await call('POST', '/api/deploy/shell', { node: 'a1', script: 'echo hi', rollback_script: 'echo undo', timeout_ms: 5000 })).json;
  const got = await polling;
  expect(got.status).toBe(200);
  expect(got.json).toMatchObject({ deploy: { id: d.id, spec: { type: 'shell', script: 'echo hi', rollback_script: 'echo undo', timeout_ms: 5000 } }, attempt_id: expect.stringMatching(/^da-/) });
  const attempt = got.json.attempt_id;
  // Claimed: the other node sees nothing, and this node does not get it twice.
  expect((await call('POST', '/api/deploy/agent/claim?wait_ms=0', {}, b.token)).status).toBe(204);
  expect((await call('POST', '/api/deploy/agent/claim?wait_ms=0', {}, a.token)).status).toBe(204);

  const rep = (status: string, progress: number, extra: Record<string, unknown> = {}, token = a.token) => call('POST', `/api/deploy/${d.id}/report`, { attempt_id: attempt, deploy_id: d.id, command_type: 'deploy.shell', status, progress, stage: status, message: status, logs: [], timestamp: new Date().toISOString(), ...extra }, token);
  expect((await rep('executing', 5, {}, b.token)).status).toBe(403);
  expect((await rep('executing', 5, { attempt_id: 'da-stale' })).status).toBe(423);
  expect((await rep('executing', 5, { progress: 'x' })).json.error.details).toEqual({ field: 'progress' });
  expect((await rep('executing', 5)).json).toEqual({ deploy: d.id, applied: true });
  expect((await rep('script_running', 30, { logs: ['stdout: hi'] })).json.applied).toBe(true);
  const cb = { attempt_id: attempt, callback_id: d.id, command_type: 'deploy.shell', deploy_type: 'shell', status: 'success', success: true, result: { exit_code: 0, stdout: 'hi\n' }, error: '', duration: 40, timestamp: new Date().toISOString() };
  expect((await call('POST', `/api/deploy/${d.id}/callback`, { ...cb, attempt_id: 'da-stale' }, a.token)).status).toBe(423);
  expect((await call('POST', `/api/deploy/${d.id}/callback`, cb, a.token)).json).toEqual({ deploy: d.id, applied: true });
  expect((await call('POST', `/api/deploy/${d.id}/callback`, cb, a.token)).json.applied).toBe(false);

  const rec = (await call('GET', `/api/deploy/${d.id}`)).json;
  expect(rec).toMatchObject({ status: 'success', active: false, progress: 100, result: { exit_code: 0, stdout: 'hi\n' } });
  const hist = (await call('GET', `/api/deploy/${d.id}/status`)).json;
  expect(hist.items.map((h: { status: string }) => h.status)).toEqual(['pending', 'executing', 'script_running', 'success']);
  expect((await call('GET', `/api/deploy/${d.id}/logs`)).json.items.map((l: { line: string }) => l.line)).toEqual(['stdout: hi']);

  // Manual rollback: 202 and a deploy.rollback deploy the agent claims.
  const rb = await call('POST', `/api/deploy/${d.id}/rollback`, {});
  expect(rb.status).toBe(202);
  expect(rb.json).toMatchObject({ command_type: 'deploy.rollback', rollback_of: d.id, status: 'pending' });
  expect(rb.headers.get('location')).toBe(`/api/deploy/${rb.json.id}`);
  expect((await call('POST', `/api/deploy/${d.id}/rollback`, {})).status).toBe(409);
  expect((await call('POST', '/api/deploy/agent/claim?wait_ms=0', {}, a.token)).json.deploy).toMatchObject({ id: rb.json.id, rollback_of: d.id });

  // The node's deploys, newest first, by node id or name, cursor paged.
  const p1 = (await call('GET', '/api/deploy/a1/list?limit=1')).json;
  expect(p1.items.map((x: { id: string }) => x.id)).toEqual([rb.json.id]);
  const p2 = (await call('GET', `/api/deploy/${a.id}/list?limit=1&cursor=${p1.next_cursor}`)).json;
  expect(p2).toMatchObject({ items: [{ id: d.id }], next_cursor: null });
  expect((await call('GET', '/api/deploy/a1/list?limit=0')).json.error.details).toEqual({ field: 'limit' });

  // The docker monitor: the node posts for itself only; people read it.
  const sample = { name: 'web', id: 'c0ffee', image: 'web:2', state: 'running', cpu_percent: 1.5, memory_bytes: 1024, timestamp: new Date().toISOString() };
  expect((await call('POST', `/api/docker/monitor/${b.id}`, { containers: [sample] }, a.token)).status).toBe(403);
  expect((await call('POST', `/api/docker/monitor/${a.id}`, { containers: [sample] }, a.token)).json).toEqual({ node: a.id, stored: 1 });
  const mon = (await call('GET', '/api/docker/monitor/a1')).json;
  expect(mon).toMatchObject({ node: a.id, items: [{ name: 'web', report: sample }] });
});
