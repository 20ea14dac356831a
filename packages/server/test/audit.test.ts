// Audit (seed 11): every push, pull, promote, rollback and delete with time, project/app,
// version, manifest digest, token id, agent id and address; queried with filters and pages.
import { mkdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHasher, pull, push, type Hasher } from '@kk/core';
import { call, httpStore, mintToken, publishFiles, startTestServer, type TestServer } from './helpers.js';

let t: TestServer;
let hasher: Hasher;
let pushToken: string;
let manifest: string;

beforeAll(async () => {
  t = await startTestServer();
  hasher = createHasher({ threads: 1 });
  pushToken = await mintToken(t, 'project:aud', ['push', 'pull', 'promote']);
  const src = path.join(t.root, 'src');
  await mkdir(src, { recursive: true });
  await writeFile(path.join(src, 'f.txt'), 'audit me');
  for (const version of ['v1', 'v2']) {
    const store = await httpStore(t, pushToken);
    const r = await push({ store, hasher, project: 'aud', app: 'svc', version, dir: src, statCache: false });
    manifest = r.manifest;
    await store.driver.close();
  }
  const store = await httpStore(t, pushToken);
  await pull({ store, hasher, project: 'aud', app: 'svc', version: 'v2', target: path.join(t.root, 'dst'), stateDir: path.join(t.root, 'state') });
  await store.driver.close();
  await call(t.url, 'POST', '/promote', { token: pushToken, json: { project: 'aud', app: 'svc', version: 'v2' }, headers: { 'x-kk-agent': 'ci-runner-3' } });
  await publishFiles(t, 'other', 'x', 'v1', { 'o.txt': 'other' });
});
afterAll(async () => {
  await hasher.close();
  await t.cleanup();
});

const audit = async (q: string, token = t.admin) => {
  const r = await call(t.url, 'GET', `/api/v1/audit${q}`, { token });
  expect(r.status).toBe(200);
  return r.json();
};

describe('the audit log', () => {
  it('records a push with time, project/app, version, manifest, token id, agent id and address', async () => {
    const { items } = await audit('?action=push&project=aud');
    expect(items).toHaveLength(2);
    const tokenId = (await call(t.url, 'GET', '/api/v1/whoami', { token: pushToken })).json().token;
    expect(items[0]).toMatchObject({ action: 'push', project: 'aud', app: 'svc', version: 'v2', manifest, token: tokenId, agent: 'test-agent/1', address: '127.0.0.1' });
    expect(Date.parse(items[0].time)).toBeGreaterThan(Date.now() - 600_000);
  });

  it('records pulls and promotes, with the agent the client named', async () => {
    const pulls = (await audit('?action=pull&project=aud')).items;
    expect(pulls[0]).toMatchObject({ action: 'pull', project: 'aud', app: 'svc', version: 'v2', manifest });
    const promotes = (await audit('?action=promote&agent=ci-runner-3')).items;
    expect(promotes).toEqual([expect.objectContaining({ project: 'aud', app: 'svc', version: 'v2', channel: 'promoted', agent: 'ci-runner-3' })]);
  });

  it('pages newest first by default, oldest first with order=asc', async () => {
    const all = (await audit('?project=aud&limit=500')).items;
    expect(all.length).toBeGreaterThanOrEqual(4);
    const times = all.map((e: { time: string }) => e.time);
    expect([...times].sort().reverse()).toEqual(times);
    const p1 = await audit('?project=aud&limit=2');
    const p2 = await audit(`?project=aud&limit=2&offset=${p1.next_offset}`);
    expect([...p1.items, ...p2.items]).toEqual(all.slice(0, 4));
    const asc = (await audit('?project=aud&limit=500&order=asc')).items;
    expect(asc.map((e: { id: string }) => e.id)).toEqual([...all].reverse().map((e: { id: string }) => e.id));
  });

  it('filters by time window', async () => {
    expect((await audit('?since=2999-01-01T00:00:00Z')).items).toEqual([]);
    expect((await audit('?until=2000-01-01T00:00:00Z')).items).toEqual([]);
    expect((await audit(`?since=${new Date(Date.now() - 3_600_000).toISOString()}&project=aud`)).items.length).toBeGreaterThan(0);
  });

  it('a project admin sees only its project; a token without admin gets 403', async () => {
    const padmin = await mintToken(t, 'project:aud', ['admin']);
    const seen = (await audit('?limit=500', padmin)).items;
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((e: { project: string }) => e.project === 'aud')).toBe(true);
    expect((await call(t.url, 'GET', '/api/v1/audit', { token: pushToken })).status).toBe(403);
  });
});
