// The fleet's CLI commands against a real server (in-process, port 0): kk node show|drain|rm,
// kk target list|rm, kk sync, kk pause|resume --target, each with --json and the exit codes.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startServer, type RunningServer } from '@kk/server';
import { type Sandbox, sandbox, writeTree } from './helpers.js';

let sb: Sandbox;
let srv: RunningServer;
const admin = `admin-${randomBytes(8).toString('hex')}`;
let target: string;
const flags = () => ['--server', srv.url, '--token', admin];

beforeAll(async () => {
  sb = await sandbox();
  srv = await startServer({ store: sb.path('store'), listen: '127.0.0.1:0', adminToken: admin, log: false, config: { hasherThreads: 1 } });
  await writeTree(sb.path('ci'), { '.kkartifact.yml': `server_url: ${srv.url}\ntoken: ${admin}\n` });
  await writeTree(sb.path('build'), { 'index.html': 'v1' });
  expect((await sb.kk(['push', '-p', 'shop', '-a', 'web', '--version', 'v1', '--path', sb.path('build')], { cwd: sb.path('ci') })).code).toBe(0);
  expect((await sb.kk(['promote', '-p', 'shop', '-a', 'web', '--version', 'v1'], { cwd: sb.path('ci') })).code).toBe(0);
  const post = (path: string, body: unknown) => fetch(`${srv.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify(body) }).then((r) => r.json() as Promise<Record<string, any>>);
  await post('/api/sync/nodes', { name: 'edge-1', kind: 'agent', tags: { dc: 'x' } });
  target = (await post('/api/sync/targets', { project: 'shop', app: 'web', node: 'edge-1', path: '/srv/shop' })).id;
}, 120_000);

afterAll(async () => {
  await srv?.close();
  await sb?.cleanup();
});

it('pause, sync while paused, resume, status: the pause names who and why; resume queues one sync', async () => {
  const p = await sb.kkJson(['pause', ...flags(), '--target', target, '--reason', 'upgrading node 2']);
  expect(p.code, p.stderr).toBe(0);
  expect(p.json.paused).toMatchObject({ reason: 'upgrading node 2', by: 'admin' });
  const again = await sb.kkJson(['pause', ...flags(), '--target', target, '--reason', 'x']);
  expect(again.code).not.toBe(0);
  expect(again.json.error.message).toMatch(/already paused by admin/);
  const s = await sb.kkJson(['sync', ...flags(), '-p', 'shop']);
  expect(s.json.items.map((t: Record<string, string>) => [t.version, t.state])).toEqual([['v1', 'PENDING']]);
  const st = await sb.kkJson(['target', 'status', ...flags(), target]);
  expect(st.json).toMatchObject({ state: 'paused', queued: { version: 'v1' } });
  const r = await sb.kkJson(['resume', ...flags(), '--target', target]);
  expect(r.json).toMatchObject({ target: { paused: null }, task: { version: 'v1' } });
  const bad = await sb.kk(['pause', ...flags(), '--target', 'tg-nope', '--reason', 'x']);
  expect(bad.code).not.toBe(0);
  expect(bad.stderr).toMatch(/does not exist/);
}, 120_000);

it('node show, drain, target list, rm guarded by targets, then target rm and node rm', async () => {
  const d = await sb.kkJson(['node', 'drain', ...flags(), 'edge-1', '--reason', 'kernel upgrade']);
  expect(d.json).toMatchObject({ schedulable: false, drain_reason: 'kernel upgrade' });
  const show = await sb.kk(['node', 'show', ...flags(), 'edge-1']);
  expect(show.stdout).toMatch(/edge-1 \(nd-[^)]+\), agent: OFFLINE/);
  expect(show.stdout).toMatch(/schedulable: no \(kernel upgrade\)/);
  const tl = await sb.kkJson(['target', 'list', ...flags(), '-p', 'shop']);
  expect(tl.json.items.map((t: Record<string, string>) => t.id)).toEqual([target]);
  const refused = await sb.kkJson(['node', 'rm', ...flags(), 'edge-1']);
  expect(refused.code).not.toBe(0);
  expect(refused.json.error.message).toMatch(/used by 1 target/);
  expect((await sb.kkJson(['target', 'rm', ...flags(), target])).json).toEqual({ removed: target, seconds: expect.any(Number) });
  expect((await sb.kk(['node', 'rm', ...flags(), 'edge-1'])).code).toBe(0);
  expect((await sb.kkJson(['node', 'list', ...flags()])).json.items).toEqual([]);
}, 120_000);

it('kk pause --path: every pull into the directory fails with PAUSED naming who and why, until kk resume --path', async () => {
  const dir = sb.path('deployed');
  expect((await sb.kk(['pull', '-p', 'shop', '-a', 'web', '--version', 'v1', '--path', dir], { cwd: sb.path('ci') })).code).toBe(0);
  const p = await sb.kkJson(['pause', '--path', dir, '--reason', 'upgrade in progress']);
  expect(p.code, p.stderr).toBe(0);
  expect(p.json).toMatchObject({ reason: 'upgrade in progress', by: expect.any(String), since: expect.any(String) });
  const blocked = await sb.kk(['pull', '-p', 'shop', '-a', 'web', '--version', 'v1', '--path', dir], { cwd: sb.path('ci') });
  expect(blocked.code).toBe(4);
  expect(blocked.stderr).toMatch(/paused by .*upgrade in progress/);
  expect((await sb.kk(['pause', '--path', dir, '--reason', 'x', '--until', '2h'])).stderr).toMatch(/--until applies to a target pause only/);
  expect((await sb.kk(['pause', '--reason', 'x'])).code).toBe(2); // neither --target nor --path
  expect((await sb.kkJson(['resume', '--path', dir])).json).toMatchObject({ resumed: true, was: { reason: 'upgrade in progress' } });
  expect((await sb.kkJson(['resume', '--path', dir])).json).toMatchObject({ resumed: false });
  expect((await sb.kk(['pull', '-p', 'shop', '-a', 'web', '--version', 'v1', '--path', dir], { cwd: sb.path('ci') })).code).toBe(0);
}, 120_000);

it('kk target apply -f: the YAML creates targets; a bad one names the file, line and field and changes nothing', async () => {
  await fetch(`${srv.url}/api/sync/nodes`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'yaml-1', kind: 'agent' }) });
  await writeTree(sb.path('cfg'), {
    'targets.yaml': '- id: shop\n  app: web\n  sync:\n    max_parallel_nodes: 3\n    nodes:\n      - node_id: yaml-1\n        target_path: /srv/yaml\n',
    'bad.yaml': '- id: shop\n  app: web\n  sync:\n    nodes:\n      - node_id: yaml-1\n        target_path: /srv/yaml2\n        strategy: copy\n',
  });
  const bad = await sb.kk(['target', 'apply', ...flags(), '-f', sb.path('cfg', 'bad.yaml')]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toMatch(/^kk: bad\.yaml: line 7: \[0\]\.sync\.nodes\[0\]\.strategy: strategy must be mirror or overlay, not "copy"\n {2}nothing was changed/);
  const ok = await sb.kkJson(['target', 'apply', ...flags(), '-f', sb.path('cfg', 'targets.yaml')]);
  expect(ok.code, ok.stderr).toBe(0);
  expect(ok.json.created).toEqual([expect.objectContaining({ project: 'shop', app: 'web', node: 'yaml-1', path: '/srv/yaml', id: expect.stringMatching(/^tg-/) })]);
  const list = await sb.kkJson(['target', 'list', ...flags(), '-p', 'shop']);
  const paths = list.json.items.map((t: Record<string, string>) => t.path);
  expect(paths).toContain('/srv/yaml');
  expect(paths).not.toContain('/srv/yaml2');
}, 120_000);
