// The outbox on its own: persisted in order (0600 files), sent oldest first, kept when the
// server is away, dropped when refused for good, and a torn file does not block the rest.
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { Outbox } from '../src/index.js';
import { FakeApi } from './fake-api.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kk-outbox-'));
});
afterEach(() => rm(dir, { recursive: true, force: true }));
const id = { node: 'nd-1', token: 'kkn_x' };

it('keeps reports on disk while the server is away and sends them in order when it is back', async () => {
  const ob = new Outbox(dir);
  for (let i = 0; i < 3; i++) await ob.add('tk-1', 'at-1', { logs: [{ line: `l${i}` }] });
  await ob.add('tk-1', 'at-1', { outcome: { ok: true, result: {} } });
  const files = await readdir(join(dir, 'outbox'));
  expect(files).toHaveLength(4);
  expect((await stat(join(dir, 'outbox', files[0]!))).mode & 0o777).toBe(0o600);
  const api = new FakeApi();
  api.down = true;
  expect(await ob.flush(api, id)).toEqual({ sent: 0, refused: [], pending: 4 });
  // Another process (a restarted agent) continues the numbering and sends all of it.
  const again = new Outbox(dir);
  await again.add('tk-2', 'at-2', { stage: 'fetch' });
  api.down = false;
  expect(await again.flush(api, id)).toEqual({ sent: 5, refused: [], pending: 0 });
  expect(api.reports.map((r) => r.report.logs?.[0]?.line ?? (r.report.outcome ? 'outcome' : r.report.stage))).toEqual(['l0', 'l1', 'l2', 'outcome', 'fetch']);
  expect(await again.entries()).toEqual([]);
});

it('drops what the server refuses for good and skips a torn file', async () => {
  const ob = new Outbox(dir);
  await ob.add('tk-1', 'at-old', { outcome: { ok: true, result: {} } });
  await writeFile(join(dir, 'outbox', '000000000002.json'), '{"seq":2,"ta');
  await new Outbox(dir).add('tk-1', 'at-new', { stage: 'commit' });
  expect(await readdir(join(dir, 'outbox'))).toEqual(['000000000001.json', '000000000002.json', '000000000003.json']);
  const api = new FakeApi();
  api.refuse.add('at-old');
  const r = await ob.flush(api, id);
  expect(r.sent).toBe(1);
  expect(r.refused).toEqual([{ task: 'tk-1', attempt_id: 'at-old', code: 'LOCKED', message: expect.stringMatching(/no longer current/) }]);
  expect(api.reports.map((x) => x.attempt_id)).toEqual(['at-new']);
  expect(await readdir(join(dir, 'outbox'))).toEqual([]);
});
