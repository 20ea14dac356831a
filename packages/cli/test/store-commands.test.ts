// Issue 10 through the built `kk`: promote (item 9), versions of an unknown app (15), fsck
// (23), no AWS SDK Node-version warning (12), and pulls as the server's audit log sees them (4):
// one entry per completed pull, also when the directory already held the version, with this
// machine's agent id, and none for a push or a diff.
import { randomBytes } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '@kk/server';
import { type Sandbox, sandbox, writeTree } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
  await writeTree(sb.path('v1'), { 'index.html': 'one', 'app.js': 'console.log(1)\n'.repeat(100) });
  await writeTree(sb.path('v2'), { 'index.html': 'two', 'app.js': 'console.log(2)\n'.repeat(100) });
  await writeFile(sb.path('.kkartifact.yml'), 'store: ./store\n');
  for (const v of ['1', '2']) {
    const r = await sb.kk(['push', '-p', 'shop', '-a', 'web', '--version', v, '--path', sb.path(`v${v}`), '--packs', 'none']);
    expect(r.code, r.stderr).toBe(0);
  }
});
afterAll(async () => sb.cleanup());

describe('kk promote', () => {
  it('points a channel at a version, reports the one it replaced, and refuses an unknown version', async () => {
    const first = await sb.kkJson(['promote', '-p', 'shop', '-a', 'web', '--version', '1']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.json).toMatchObject({ project: 'shop', app: 'web', channel: 'promoted', version: '1', previous: null });
    const second = await sb.kkJson(['promote', '-p', 'shop', '-a', 'web', '--version', 'latest']);
    expect(second.json).toMatchObject({ version: '2', previous: '1' });
    const stored = JSON.parse(await readFile(sb.path('store', 'channels', 'shop', 'web', 'promoted'), 'utf8'));
    expect(stored).toMatchObject({ version: '2', manifest: second.json.manifest, history: [expect.objectContaining({ version: '1' })] });
    const human = await sb.kk(['promote', '-p', 'shop', '-a', 'web', '--version', '1', '--channel', 'staging']);
    expect(human.stdout.trim()).toBe('kk: shop/web staging -> 1');
    const missing = await sb.kkJson(['promote', '-p', 'shop', '-a', 'web', '--version', '9']);
    expect(missing.code).toBe(1);
    expect(missing.json.error.code).toBe('NOT_FOUND');
  });
});

describe('kk versions', () => {
  it('of an unknown app exits non-zero with NOT_FOUND; of a known one lists it', async () => {
    const unknown = await sb.kkJson(['versions', '-p', 'shop', '-a', 'nope']);
    expect(unknown.code).toBe(1);
    expect(unknown.json.error.code).toBe('NOT_FOUND');
    const known = await sb.kkJson(['versions', '-p', 'shop', '-a', 'web']);
    expect(known.code).toBe(0);
    expect(known.json.versions.map((v: { version: string }) => v.version)).toEqual(['2', '1']);
  });
});

describe('kk fsck', () => {
  it('exits 3 on a damaged chunk, quarantines it with --repair, and a re-push restores it', async () => {
    const clean = await sb.kkJson(['fsck']);
    expect(clean.code, clean.stderr).toBe(0);
    expect(clean.json).toMatchObject({ damaged: [], quarantined: 0 });
    expect(clean.json.chunksChecked).toBeGreaterThanOrEqual(4);
    // Damage the chunk of v1's app.js (one chunk: its digest is the file's).
    const manifest = JSON.parse((await sb.kk(['manifest', '-p', 'shop', '-a', 'web', '--version', '1', '--json'])).stdout);
    const file = (manifest.files ?? manifest.manifest?.files).find((f: { path: string }) => f.path === 'app.js');
    const hex = file.sha256.slice(7);
    const chunk = sb.path('store', 'chunks', hex.slice(0, 2), hex);
    const bytes = await readFile(chunk);
    bytes[bytes.length - 1] ^= 0xff;
    await writeFile(chunk, bytes);

    const found = await sb.kkJson(['fsck']);
    expect(found.code).toBe(3);
    expect(found.json.damaged).toEqual([expect.objectContaining({ kind: 'chunk', digest: file.sha256 })]);
    expect(found.json.affected).toEqual([{ project: 'shop', app: 'web', version: '1' }]);
    const pull = await sb.kk(['pull', '-p', 'shop', '-a', 'web', '--version', '1', '--path', sb.path('deploy-fsck')]);
    expect(pull.code).toBe(3);
    expect(pull.stderr).toContain('kk fsck --store');

    const repaired = await sb.kkJson(['fsck', '--repair']);
    expect(repaired.code, repaired.stderr).toBe(0);
    expect(repaired.json.quarantined).toBe(1);
    expect(await readdir(sb.path('store', 'quarantine', 'chunks', hex.slice(0, 2)))).toEqual([hex]);
    const repush = await sb.kkJson(['push', '-p', 'shop', '-a', 'web', '--version', '1', '--path', sb.path('v1')]);
    expect(repush.code, repush.stderr).toBe(0);
    expect(repush.json.chunksUploaded).toBe(1);
    const ok = await sb.kk(['pull', '-p', 'shop', '-a', 'web', '--version', '1', '--path', sb.path('deploy-fsck')]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(await readFile(sb.path('deploy-fsck', 'app.js'), 'utf8')).toBe('console.log(1)\n'.repeat(100));
  });
});

describe('S3 commands', () => {
  it('print no AWS SDK Node-version warning', async () => {
    const r = await sb.kk(['versions', '-p', 'shop', '-a', 'web', '--store', 's3://bucket/kk?endpoint=http://127.0.0.1:1&region=us-east-1'], {
      env: { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' },
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^kk: /);
    expect(r.stderr).not.toMatch(/NodeVersionSupportWarning|AWS SDK/);
  });
});

describe('pulls in the server\'s audit log', () => {
  let srv: RunningServer;
  const admin = `admin-${randomBytes(8).toString('hex')}`;
  beforeAll(async () => {
    srv = await startServer({ store: sb.path('server-store'), listen: '127.0.0.1:0', adminToken: admin, log: false, config: { hasherThreads: 1 } });
    await writeTree(sb.path('remote'), { '.kkartifact.yml': `server_url: ${srv.url}\ntoken: ${admin}\n` });
  });
  afterAll(async () => srv?.close());

  const audit = async (q: string) => {
    const res = await fetch(`${srv.url}/api/v1/audit${q}`, { headers: { authorization: `Bearer ${admin}` } });
    return (await res.json()) as { items: Record<string, string>[]; total: number };
  };

  it('one entry per completed pull (also an up-to-date one) with the agent id; none for push, diff or promote', async () => {
    const cwd = sb.path('remote');
    for (const v of ['1', '2']) expect((await sb.kk(['push', '-p', 'shop', '-a', 'web', '--version', v, '--path', sb.path(`v${v}`), '--packs', 'none'], { cwd })).code).toBe(0);
    expect((await sb.kk(['promote', '-p', 'shop', '-a', 'web', '--version', '2'], { cwd })).code).toBe(0);
    expect((await audit('?action=pull')).total).toBe(0);
    const target = sb.path('deploy-remote');
    expect((await sb.kk(['pull', '-p', 'shop', '-a', 'web', '--version', '2', '--path', target], { cwd })).code).toBe(0);
    expect((await sb.kk(['pull', '-p', 'shop', '-a', 'web', '--version', '2', '--path', target], { cwd })).code).toBe(0);
    const diff = await sb.kk(['diff', '-p', 'shop', '-a', 'web', '--version', '1', '--path', target], { cwd });
    expect(diff.code).toBeLessThan(2);
    const id = (await readFile(join(sb.stateDir, 'agent-id'), 'utf8')).trim();
    expect(id).toMatch(/^[0-9a-f]{16}$/);
    const { items, total } = await audit('?action=pull');
    expect(total).toBe(2);
    for (const e of items) expect(e).toMatchObject({ action: 'pull', project: 'shop', app: 'web', version: '2', agent: `${hostname()}/${id}` });
    expect((await audit('?action=promote')).total).toBe(1);
  });
});
