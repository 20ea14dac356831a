// Retention (seed 6.3, acceptance 7): keep the newest N of every app and whatever a channel
// points to, free the rest's chunks, and run daily at 03:00 unless configured otherwise.
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Digest, chunkKey } from '@kk/core';
import { DEFAULT_RETENTION_SCHEDULE, RetentionScheduler } from '../src/index.js';
import { call, httpStore, publishAt, startTestServer, type TestServer } from './helpers.js';

let t: TestServer;
const chunks: Record<string, Digest> = {};
const chunkFile = (d: Digest) => path.join(t.storeDir, ...chunkKey(d).split('/'));

beforeAll(async () => {
  t = await startTestServer({ retainVersions: 3, gcGraceMs: 0 });
  const store = await httpStore(t);
  for (let i = 1; i <= 5; i++) {
    const { chunk } = await publishAt(store, 'ret', 'app', `v${i}`, `2024-01-0${i}T00:00:00.000Z`);
    chunks[`v${i}`] = chunk;
  }
  for (let i = 1; i <= 2; i++) await publishAt(store, 'ret', 'small', `v${i}`, `2024-01-0${i}T00:00:00.000Z`);
  await store.driver.close();
  expect((await call(t.url, 'POST', '/promote', { token: t.admin, json: { project: 'ret', app: 'app', version: 'v1' } })).status).toBe(200);
});
afterAll(async () => {
  await t.cleanup();
});

const versions = async (app: string) =>
  (await call(t.url, 'GET', `/projects/ret/apps/${app}/versions`, { token: t.admin })).json().items.map((v: { version: string }) => v.version);

describe('retention with retain_versions 3 over 5 versions, the oldest promoted', () => {
  it('a dry run says what would go and changes nothing', async () => {
    const r = await call(t.url, 'POST', '/api/v1/retention/run', { token: t.admin, json: { dry_run: true } });
    expect(r.status).toBe(200);
    expect(r.json().deleted).toEqual([{ project: 'ret', app: 'app', version: 'v2' }]);
    expect(await versions('app')).toEqual(['v5', 'v4', 'v3', 'v2', 'v1']);
  });

  it('keeps the promoted version and the newest 3, deletes the other and frees its chunks', async () => {
    expect(existsSync(chunkFile(chunks.v2!))).toBe(true);
    const r = await call(t.url, 'POST', '/api/v1/retention/run', { token: t.admin, json: {} });
    expect(r.status).toBe(200);
    const run = r.json();
    expect(run.deleted).toEqual([{ project: 'ret', app: 'app', version: 'v2' }]);
    expect(run.kept_pinned).toEqual([expect.objectContaining({ project: 'ret', app: 'app', version: 'v1' })]);
    expect(run.gc.chunksDeleted).toBeGreaterThanOrEqual(1);
    expect(run.gc.bytesFreed).toBeGreaterThan(0);
    expect(await versions('app')).toEqual(['v5', 'v4', 'v3', 'v1']);
    expect(await versions('small')).toEqual(['v2', 'v1']);
    expect(existsSync(chunkFile(chunks.v2!))).toBe(false);
    for (const v of ['v1', 'v3', 'v4', 'v5']) expect(existsSync(chunkFile(chunks[v]!)), v).toBe(true);
    // The kept versions still pull.
    expect((await call(t.url, 'GET', '/file/ret/app/promoted?path=data.bin', { token: t.admin })).status).toBe(200);
  });

  it('audits each deletion with the scheduler as actor and records the run', async () => {
    const audit = (await call(t.url, 'GET', '/api/v1/audit?action=delete&project=ret', { token: t.admin })).json().items;
    expect(audit).toEqual([expect.objectContaining({ action: 'delete', project: 'ret', app: 'app', version: 'v2', token: 'admin' })]);
    const status = (await call(t.url, 'GET', '/api/v1/retention', { token: t.admin })).json();
    expect(status.retain_versions).toBe(3);
    expect(status.last_run.deleted).toHaveLength(1);
  });

  it('needs a global admin token', async () => {
    const mint = await call(t.url, 'POST', '/api/v1/tokens', { token: t.admin, json: { scope: 'project:ret', permissions: ['admin'] } });
    expect((await call(t.url, 'POST', '/api/v1/retention/run', { token: mint.json().token, json: {} })).status).toBe(403);
  });
});

describe('the schedule', () => {
  it('by default runs next at 03:00 server time, within a day', async () => {
    expect(DEFAULT_RETENTION_SCHEDULE).toBe('0 3 * * *');
    const next = t.server.server.retention.nextRun()!;
    expect(next.getHours()).toBe(3);
    expect(next.getMinutes()).toBe(0);
    expect(next.getSeconds()).toBe(0);
    expect(next.getTime()).toBeGreaterThan(Date.now());
    expect(next.getTime() - Date.now()).toBeLessThanOrEqual(24 * 3_600_000);
    const status = (await call(t.url, 'GET', '/api/v1/retention', { token: t.admin })).json();
    expect(status.schedule).toBe('0 3 * * *');
    expect(new Date(status.next_run).getTime()).toBe(next.getTime());
  });

  it('from a date just before 03:00 the next run is that same 03:00; just after, the next day', () => {
    const cron = RetentionScheduler.pattern(DEFAULT_RETENTION_SCHEDULE);
    const before = new Date(2025, 5, 10, 2, 59, 30);
    expect(cron.nextRun(before)).toEqual(new Date(2025, 5, 10, 3, 0, 0));
    expect(cron.nextRun(new Date(2025, 5, 10, 3, 0, 1))).toEqual(new Date(2025, 5, 11, 3, 0, 0));
  });

  it('follows a configured cron expression and time zone', () => {
    const cron = RetentionScheduler.pattern('30 4 * * *', 'UTC');
    expect(cron.nextRun(new Date(Date.UTC(2025, 0, 1, 5, 0, 0)))).toEqual(new Date(Date.UTC(2025, 0, 2, 4, 30, 0)));
  });
});
