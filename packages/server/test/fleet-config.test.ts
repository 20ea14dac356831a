// The YAML target config (fleet-config.ts, seed 000 "项目配置扩展") through POST
// /api/sync/targets/apply on a real server: the seed's document creates targets and sets the
// project's max_parallel_nodes; applying again changes nothing; a changed strategy updates; prune
// removes what the file no longer names; every problem names its line and field, and nothing
// changes unless the whole document is valid.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Store, createMemoryDriver } from '@kk/core';
import { type KkServer, createKkServer } from '../src/index.js';

const admin = 'admin-fleet-config-test-0123456789';
let dir: string;
let server: KkServer;
let url: string;

async function apply(doc: string, q = '', json = false) {
  const r = await fetch(`${url}/api/sync/targets/apply${q}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': json ? 'application/json' : 'application/yaml' },
    body: json ? JSON.stringify({ document: doc, source: 'targets.yaml' }) : doc,
  });
  return { status: r.status, json: (await r.json()) as Record<string, any> };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kk-fleet-config-'));
  server = await createKkServer({ store: await Store.open(createMemoryDriver(), { create: true }), adminToken: admin, log: false, db: `sqlite://${join(dir, 'kk.db')}` });
  url = await server.listen('127.0.0.1:0');
  await server.control.fleet.createNodes([{ name: 'node-01', kind: 'agent' }, { name: 'node-02', kind: 'agent' }, { name: 'ssh-1', kind: 'ssh', address: 'deploy@10.0.0.9' }], 'admin');
});
afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

const SEED = `- id: project-a
  name: "Project A"
  repo: "git@example.com:org/project-a.git"
  sync:
    enabled: true
    driver: "agent"          # agent / rsync / inherit
    max_parallel_nodes: 2
    nodes:
      - node_id: "node-01"
        target_path: "/srv/project-a"
        strategy: "mirror"
      - node_id: "node-02"
        target_path: "/srv/project-a"
        include:
          - "dist/**"
        exclude:
          - ".git/**"
- id: project-b
  sync:
    enabled: false
    nodes: []
`;

it('the seed document creates the targets and settings; again: unchanged; edits update; prune removes', async () => {
  const dry = await apply(SEED, '?dry_run=1');
  expect(dry.json).toMatchObject({ dry_run: true, created: [{ node: 'node-01' }, { node: 'node-02' }], skipped: ['project-b'] });
  expect(await server.control.fleet.targets({ project: 'project-a' })).toEqual([]);
  const r = await apply(SEED);
  expect(r.status).toBe(200);
  expect(r.json.created.map((t: Record<string, string>) => [t.project, t.app, t.node, t.path])).toEqual([
    ['project-a', 'project-a', 'node-01', '/srv/project-a'],
    ['project-a', 'project-a', 'node-02', '/srv/project-a'],
  ]);
  const ts = await server.control.fleet.targets({ project: 'project-a' });
  expect(ts.map((t) => [t.strategy, t.include, t.exclude, t.follows])).toEqual([
    ['mirror', [], [], 'promoted'],
    ['mirror', ['dist/**'], ['.git/**'], 'promoted'],
  ]);
  expect((await server.control.fleet.project('project-a')).max_parallel_nodes).toBe(2);
  expect((await apply(SEED, '', true)).json).toMatchObject({ created: [], updated: [], unchanged: ts.map((t) => t.id) });
  const edited = SEED.replace('strategy: "mirror"', 'strategy: overlay\n        on_local_change: fail');
  expect((await apply(edited)).json.updated).toEqual([expect.objectContaining({ id: ts[0]!.id, changed: ['strategy', 'on_local_change'] })]);
  expect((await server.control.fleet.target(ts[0]!.id)).on_local_change).toBe('fail');
  // A sync mode (full by default): skip-existing is an update; another value is refused by line and field.
  const skip = edited.replace('on_local_change: fail', 'on_local_change: fail\n        mode: skip-existing');
  expect((await apply(skip)).json.updated).toEqual([expect.objectContaining({ id: ts[0]!.id, changed: ['mode'] })]);
  expect((await server.control.fleet.target(ts[0]!.id)).mode).toBe('skip-existing');
  const badMode = (await apply(skip.replace("mode: skip-existing", "mode: events"))).json;
  expect(badMode.error.details.problems).toEqual([{ line: expect.any(Number), field: '[0].sync.nodes[0].mode', message: 'mode must be full or skip-existing, not "events"' }]);
  expect((await server.control.fleet.target(ts[0]!.id)).mode).toBe('skip-existing');
  const one = edited.slice(0, edited.indexOf('      - node_id: "node-02"'));
  expect((await apply(one, '?prune=1')).json.removed).toEqual([ts[1]!.id]);
  expect((await server.control.fleet.targets({ project: 'project-a' })).map((t) => t.id)).toEqual([ts[0]!.id]);
});

it('every problem names its line and field; nothing changes', async () => {
  const before = await server.control.fleet.targets();
  const doc = `- id: shop
  app: web
  sync:
    driver: agent
    max_parallel_nodes: 0
    nodez: []
- id: shop2
  sync:
    driver: rsync
    nodes:
      - node_id: node-01
        target_path: /srv/a
      - node_id: ghost
        target_path: /srv/b
      - node_id: ssh-1
        target_path: relative/dir
        strategy: copy
      - node_id: ssh-1
        target_path: /srv/c
        follows: pinned
`;
  const r = await apply(doc, '', true);
  expect(r.status).toBe(400);
  expect(r.json.error.code).toBe('CONFIG_INVALID');
  expect(r.json.error.message).toBe('targets.yaml: line 4: [0].sync.nodes: project shop: sync.nodes must be a list of {node_id, target_path, ...} (and 7 more problem(s))');
  const problems = r.json.error.details.problems.map((p: { line: number; field: string; message: string }) => `${p.line} ${p.field}: ${p.message}`);
  expect(problems).toEqual([
    '4 [0].sync.nodes: project shop: sync.nodes must be a list of {node_id, target_path, ...}',
    '5 [0].sync.max_parallel_nodes: max_parallel_nodes must be an integer from 1 to 1000',
    '6 [0].sync.nodez: unknown field nodez (known: enabled, driver, max_parallel_nodes, retry, offline_policy, degraded_after, nodes)',
    '11 [1].sync.nodes[0].node_id: node node-01 is an agent node but the driver is rsync (rsync needs an ssh node)',
    '13 [1].sync.nodes[1].node_id: no node "ghost" (kk node list shows them; agents appear when they enrol)',
    expect.stringMatching(/^16 \[1\]\.sync\.nodes\[2\]\.target_path: bad target path "relative\/dir"/),
    '17 [1].sync.nodes[2].strategy: strategy must be mirror or overlay, not "copy"',
    '18 [1].sync.nodes[3].pinned: a pinned target needs pinned: VERSION',
  ]);
  expect(r.json.error.hint).toMatch(/nothing was changed/);
  const broken = await apply('- id: x\n  sync: {nodes: [\n');
  expect(broken.status).toBe(400);
  expect(broken.json.error.message).toMatch(/^the target config: line \d+: /);
  expect(await server.control.fleet.targets()).toEqual(before);
});
