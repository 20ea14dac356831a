// ssh nodes (issue 12, acceptance 1's ssh part): a real kk server syncs an ssh node on the
// testkit's sshd (127.0.0.1) with rsync. Promote v1 then v2: the target holds v2 byte-exactly
// (the files the target excludes and the default-ignored runtime/ left alone), synced by rsync
// (its itemized changes in the task log). The node unreachable (a TCP relay in front of sshd
// closed): attempts fail as SSH_UNREACHABLE and are retried with backoff, the node goes OFFLINE
// and its task waits, and the target converges once a probe finds the relay back. A refused
// login is final and names the cause.
// Verify is an rsync dry run with checksums: OK, then a file changed on the node is a CONFLICT;
// with on_local_change: fail, such a file stops the next sync before anything is applied.
// Also the pure parts: addresses, rsync filter rules from gitignore rules, exit-status mapping.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store, createHasher, createMemoryDriver, pauseLocal, push } from '@kk/core';
import { type SshdBackend, startSshd, sshdUnavailable } from '@kk/testkit';
import { KkServer, createKkServer } from '../src/index.js';
import { ItemizeCounter, classifyFailure, parseSshAddress, parseStats, rsyncFilterRules, verifyProblem } from '../src/ssh-nodes.js';

const run = promisify(execFile);
const admin = 'admin-ssh-nodes-test-0123456789';
const why = sshdUnavailable() ?? (process.env.CI !== 'true' && !(await run('rsync', ['--version']).then(() => true, () => false)) ? 'rsync is not installed' : undefined);

describe('rsync pieces', () => {
  it('parses node addresses', () => {
    expect(parseSshAddress('deploy@web-1:2222')).toEqual({ user: 'deploy', host: 'web-1', port: 2222 });
    expect(parseSshAddress('ssh://root@[::1]:22')).toEqual({ user: 'root', host: '::1', port: 22 });
    expect(parseSshAddress('10.0.0.9')).toEqual({ user: undefined, host: '10.0.0.9', port: 22 });
    expect(() => parseSshAddress('a@b:99999')).toThrow(/not user@host\[:port\]/);
    expect(() => parseSshAddress('a b')).toThrow(/not user@host/);
  });

  it('turns gitignore rules (last match wins) into rsync rules (first match wins)', () => {
    expect(rsyncFilterRules({ include: [], exclude: ['*.log', '!keep.log', 'cache/tmp/'] })).toEqual([
      '- /.kk-staging/',
      '- /cache/tmp/',
      '+ keep.log',
      '- *.log',
      '- tmp/',
      '- runtime/',
      '- .git/',
    ]);
    expect(rsyncFilterRules({ include: ['public/', '/index.html'], exclude: [] })).toEqual(['- /.kk-staging/', '- tmp/', '- runtime/', '- .git/', '+ /index.html', '+ public/**', '+ public/', '+ */', '- *']);
  });

  it('maps exit statuses and stderr to retryable or final causes', () => {
    const w = 'node s1 (u@h)';
    expect(classifyFailure('rsync', 255, null, 'ssh: connect to host 127.0.0.1 port 1: Connection refused\nrsync: connection unexpectedly closed', w)).toMatchObject({ code: 'SSH_UNREACHABLE', retryable: true, reason: expect.stringMatching(/cannot reach node s1.*Connection refused/) });
    expect(classifyFailure('rsync', 255, null, 'u@h: Permission denied (publickey).', w)).toMatchObject({ code: 'AUTH', retryable: false });
    expect(classifyFailure('rsync', 255, null, 'Host key verification failed.', w)).toMatchObject({ code: 'SSH_HOST_KEY', retryable: false });
    expect(classifyFailure('rsync', 23, null, 'rsync: [receiver] mkstemp "/srv/x/.a.XXXX" failed: Permission denied (13)', w)).toMatchObject({ code: 'FORBIDDEN', retryable: false });
    expect(classifyFailure('rsync', 11, null, 'rsync: write failed on "/srv/x/a": No space left on device (28)', w)).toMatchObject({ code: 'DISK_FULL', retryable: true });
    expect(classifyFailure('rsync', 12, null, 'bash: line 1: rsync: command not found', w)).toMatchObject({ code: 'RSYNC_MISSING', retryable: false });
    expect(classifyFailure('rsync', 1, null, 'rsync: unknown option', w)).toMatchObject({ code: 'RSYNC_1', retryable: false, reason: expect.stringMatching(/exited with 1 \(syntax or usage error\)/) });
    expect(classifyFailure('rsync', 30, null, '', w)).toMatchObject({ code: 'RSYNC_30', retryable: true });
  });

  it('names what a verify dry run found', () => {
    expect(['>fc........ a', '>f..t...... b', '.f...p..... c', '>f+++++++++ d', '*deleting   e', '.d..t...... f/', 'cd+++++++++ g/'].map(verifyProblem)).toEqual([
      { path: 'a', problem: 'changed locally' },
      { path: 'b', problem: 'modified time changed' },
      { path: 'c', problem: 'mode changed' },
      { path: 'd', problem: 'missing' },
      { path: 'e', problem: 'not in the version' },
      undefined,
      { path: 'g/', problem: 'directory missing' },
    ]);
  });

  it('counts itemized changes and reads --stats', () => {
    const c = new ItemizeCounter();
    for (const l of ['cd+++++++++ a/', '>f+++++++++ a/x', '>fc.t...... b', '.f...p..... c', '*deleting   d', '*deleting   e/', 'sent 1 bytes']) c.add(l);
    expect(c).toMatchObject({ added: 1, changed: 2, metaOnly: 1, deleted: 1 });
    expect(parseStats('Number of files: 3 (reg: 2)\nTotal file size: 1,234 bytes\nTotal bytes sent: 5,678\n')).toEqual({ files: 3, regular_files: 2, total_file_size: 1234, bytes_sent: 5678 });
  });
});

/** A TCP relay in front of sshd that can be closed and opened again on the same port. */
class Relay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;
  constructor(private readonly to: number) {}
  async open(): Promise<void> {
    const s = createServer((c) => {
      const up = connect(this.to, '127.0.0.1');
      for (const x of [c, up]) {
        this.sockets.add(x);
        x.on('close', () => this.sockets.delete(x));
        x.on('error', () => {});
      }
      c.pipe(up).pipe(c);
    });
    await new Promise<void>((res, rej) => s.once('error', rej).listen(this.port, '127.0.0.1', () => res()));
    this.port = (s.address() as { port: number }).port;
    this.server = s;
  }
  async close(): Promise<void> {
    for (const x of this.sockets) x.destroy();
    await new Promise<void>((res) => (this.server ? this.server.close(() => res()) : res()));
    this.server = undefined;
  }
}

async function tree(root: string, rel = ''): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await readdir(join(root, rel), { withFileTypes: true }).catch(() => [])) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) for (const [k, v] of await tree(root, p)) out.set(k, v);
    else out.set(p, (await readFile(join(root, p))).toString('base64'));
  }
  return out;
}

describe.skipIf(why !== undefined && process.env.CI !== 'true')('an ssh node on a real sshd', () => {
  let dir: string;
  let sshd: SshdBackend;
  let relay: Relay;
  let server: KkServer;
  let url: string;
  let nodeId: string;
  const remote = () => join(dir, 'remote', 'site');

  async function call(method: string, path: string, body?: unknown) {
    const r = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : undefined };
  }

  /** Wait (bounded) for the target's newest task to satisfy `ok`. */
  async function until(target: string, ok: (t: Record<string, any>) => boolean, what: string, ms = 60_000) {
    const end = Date.now() + ms;
    let last: Record<string, any> | undefined;
    for (let i = 0; Date.now() < end && i < 2000; i++) {
      last = (await call('GET', `/api/sync/tasks?target=${target}&limit=1`)).json.items[0];
      if (last && ok(last)) return (await call('GET', `/api/sync/tasks/${last.id}`)).json;
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new Error(`timed out waiting for ${what}; last task: ${JSON.stringify(last)}`);
  }

  const versions: Record<string, Record<string, string>> = {
    v1: { 'index.html': '<h1>v1</h1>', 'css/site.css': 'body{}', 'old.txt': 'goes away in v2', 'big.bin': 'x'.repeat(200_000) },
    v2: { 'index.html': '<h1>v2</h1>', 'css/site.css': 'body{color:red}', 'js/app.js': 'console.log(2)', 'big.bin': 'y'.repeat(200_000) },
    v3: { 'index.html': '<h1>v3</h1>', 'css/site.css': 'body{color:red}', 'js/app.js': 'console.log(3)', 'big.bin': 'y'.repeat(200_000) },
  };
  const expected = (v: string) => new Map([...Object.entries(versions[v]!).map(([k, s]) => [k, Buffer.from(s).toString('base64')] as const), ['runtime/session', Buffer.from('local state').toString('base64')], ['debug.log', Buffer.from('local log').toString('base64')]].sort());

  beforeAll(async () => {
    if (why) throw new Error(`CI=true but ${why}`);
    dir = await mkdtemp(join(tmpdir(), 'kk-ssh-nodes-'));
    sshd = await startSshd();
    relay = new Relay(sshd.port);
    await relay.open();
    const store = await Store.open(createMemoryDriver(), { create: true });
    const hasher = createHasher({ threads: 1 });
    for (const [v, files] of Object.entries(versions)) {
      for (const [p, s] of Object.entries(files)) {
        await mkdir(join(dir, v, p, '..'), { recursive: true });
        await writeFile(join(dir, v, p), s);
      }
      await push({ store, hasher, project: 'shop', app: 'web', version: v, dir: join(dir, v), stateDir: join(dir, 'push-state') });
    }
    await hasher.close();
    // What lives on the node beside the deployed files: default-ignored runtime/, an excluded log, a stale file.
    await mkdir(join(remote(), 'runtime'), { recursive: true });
    await writeFile(join(remote(), 'runtime', 'session'), 'local state');
    await writeFile(join(remote(), 'debug.log'), 'local log');
    await writeFile(join(remote(), 'stale.txt'), 'not in any version');
    process.env.KK_FLEET_SWEEP_MS = '200';
    process.env.KK_SSH_POLL_MS = '200';
    process.env.KK_SSH_OFFLINE_PROBE_MS = '500';
    server = await createKkServer({ store, adminToken: admin, log: false, db: `sqlite://${join(dir, 'kk.db')}` });
    url = await server.listen('127.0.0.1:0');
    expect((await call('PUT', '/api/sync/projects/shop', { retry: { max_attempts: 8, base_ms: 300, max_ms: 1200 } })).status).toBe(200);
    const n = await call('POST', '/api/sync/nodes', { name: 's1', kind: 'ssh', address: `${sshd.user}@127.0.0.1:${relay.port}` });
    expect(n.status).toBe(201);
    nodeId = n.json.id;
    const s = await call('PUT', `/api/sync/nodes/${nodeId}/ssh`, { identity_file: sshd.keyFile, known_hosts: join(dir, 'known_hosts') });
    expect(s).toMatchObject({ status: 200, json: { settings: { identity_file: sshd.keyFile } } });
    expect((await call('PUT', `/api/sync/nodes/${nodeId}/ssh`, { strict_host_key_checking: 'maybe' })).json.error.message).toMatch(/must be one of accept-new, yes, no/);
  }, 60_000);

  afterAll(async () => {
    await server?.close();
    await relay?.close();
    await sshd?.stop();
    delete process.env.KK_FLEET_SWEEP_MS;
    delete process.env.KK_SSH_POLL_MS;
    delete process.env.KK_SSH_OFFLINE_PROBE_MS;
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('promote v1 then v2: rsync makes the target hold v2 byte-exactly', async () => {
    const t = await call('POST', '/api/sync/targets', { project: 'shop', app: 'web', node: 's1', path: remote(), exclude: ['*.log'] });
    expect(t.status).toBe(201);
    const test = await call('POST', `/api/sync/nodes/${nodeId}/test`);
    expect(test.json).toMatchObject({ ok: true, status: 'ONLINE', checks: [{ check: 'ssh true', ok: true }, { check: `rsync --list-only ${remote()}`, ok: true }] });
    // The server trusted the host key on first use and recorded it.
    expect(await readFile(join(dir, 'known_hosts'), 'utf8')).toMatch(/ssh-ed25519/);

    expect((await call('POST', '/api/v1/promote', { project: 'shop', app: 'web', version: 'v1' })).status).toBe(200);
    const t1 = await until(t.json.id, (x) => x.version === 'v1' && x.state === 'SUCCESS', 'v1 synced');
    expect(t1.result).toMatchObject({ via: 'rsync', files_added: 4, files_deleted: 1, cache: { hit: false } });
    expect([...(await tree(remote())).keys()].sort()).toEqual(['big.bin', 'css/site.css', 'debug.log', 'index.html', 'old.txt', 'runtime/session']);

    expect((await call('POST', '/api/v1/promote', { project: 'shop', app: 'web', version: 'v2' })).status).toBe(200);
    const t2 = await until(t.json.id, (x) => x.version === 'v2' && x.state === 'SUCCESS', 'v2 synced');
    expect(new Map([...(await tree(remote()))].sort())).toEqual(expected('v2'));
    // rsync itself says nothing differs (checksums, v2's files only; excluded paths aside).
    const check = await run('rsync', ['-rcn', '--delete', '--itemize-changes', '--exclude=runtime/', '--exclude=*.log', `${join(dir, 'v2')}/`, `${remote()}/`]);
    expect(check.stdout.trim()).toBe('');
    const lines = t2.logs.map((l: { line: string }) => l.line);
    expect(lines.some((l: string) => /^rsync -az --delete --delay-updates --safe-links --exclude-from=/.test(l))).toBe(true);
    expect(lines).toContain('<f+++++++++ js/app.js');
    expect(lines).toContain('*deleting   old.txt');
    expect(t2.result).toMatchObject({ via: 'rsync', files_added: 1, files_changed: 3, files_deleted: 1, up_to_date: false });
    expect(t2.result.bytes_fetched).toBeGreaterThan(0);
    // The version was materialized once in the server's cache and kept there.
    expect((await tree(join(dir, 'ssh-cache', 'shop', 'web', 'v2'))).get('index.html')).toBe(Buffer.from('<h1>v2</h1>').toString('base64'));
    const hist = (await call('GET', `/api/sync/targets/${t.json.id}`)).json.history;
    expect(hist[0]).toMatchObject({ status: 'SUCCESS', from_version: 'v1', to_version: 'v2' });
  }, 90_000);

  it('unreachable: retried with backoff, node OFFLINE, converges when it is back; a refused login is final; verify; on_local_change: fail', async () => {
    const target = (await call('GET', '/api/sync/targets?project=shop')).json.items[0].id;
    await relay.close();
    expect((await call('POST', '/api/v1/promote', { project: 'shop', app: 'web', version: 'v3' })).status).toBe(200);
    await until(target, (x) => x.version === 'v3' && x.state === 'RETRYING', 'a failed attempt');
    // Failed attempts (retried with backoff): DEGRADED, then OFFLINE after three failures in a row.
    let node: Record<string, any> = {};
    for (let i = 0; i < 200 && node.status !== 'OFFLINE'; i++) {
      await new Promise((r) => setTimeout(r, 150));
      node = (await call('GET', `/api/sync/nodes/${nodeId}`)).json;
    }
    expect(node).toMatchObject({ status: 'OFFLINE', status_reason: expect.stringMatching(/cannot reach node s1 .*Connection refused.* \(\d+ failed in a row\)/) });
    expect(node.history.map((h: { to: string }) => h.to).slice(0, 2)).toEqual(['OFFLINE', 'DEGRADED']);
    const failing = await until(target, (x) => x.state === 'RETRYING', 'the task to wait');
    expect(failing.attempts).toBe(3);
    expect(failing.error).toMatchObject({ code: 'SSH_UNREACHABLE', reason: expect.stringMatching(/cannot reach node s1 .*Connection refused/) });
    // Backoff: the next attempt is due later than the failure.
    expect(Date.parse(failing.next_attempt)).toBeGreaterThan(Date.parse(failing.updated));
    expect(failing.logs.some((l: { line: string }) => /^attempt \d failed: SSH_UNREACHABLE: cannot reach node s1/.test(l.line))).toBe(true);
    expect(new Map([...(await tree(remote()))].sort())).toEqual(expected('v2'));
    // OFFLINE: its task waits (no attempt is spent) while probes keep failing.
    await new Promise((r) => setTimeout(r, 1500));
    const waiting = (await call('GET', `/api/sync/tasks/${failing.id}`)).json;
    expect(waiting).toMatchObject({ state: 'RETRYING', attempts: failing.attempts });
    expect((await call('GET', `/api/sync/nodes/${nodeId}`)).json).toMatchObject({ status: 'OFFLINE', status_reason: expect.stringMatching(/cannot reach node s1/) });

    await relay.open();
    const done = await until(target, (x) => x.version === 'v3' && x.state === 'SUCCESS', 'v3 synced after the node came back');
    expect(done.attempts).toBe(failing.attempts + 1);
    // The first, failed attempt materialized v3; the one that got through reused it.
    // Two files differ in content (others may differ in mtime only, as v3 was pushed from files written later).
    expect(done.result).toMatchObject({ via: 'rsync', cache: { hit: true } });
    expect(done.result.files_changed - done.result.files_meta_only).toBe(2);
    expect(new Map([...(await tree(remote()))].sort())).toEqual(expected('v3'));
    expect((await call('GET', `/api/sync/nodes/${nodeId}`)).json.status).toBe('ONLINE');

    // A second node whose key the server does not hold: the login is refused, once, with the cause.
    const stranger = join(dir, 'stranger');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', stranger]);
    const n2 = (await call('POST', '/api/sync/nodes', { name: 's2', kind: 'ssh', address: `${sshd.user}@127.0.0.1:${relay.port}` })).json;
    await call('PUT', `/api/sync/nodes/${n2.id}/ssh`, { identity_file: stranger, known_hosts: join(dir, 'known_hosts') });
    const t2 = (await call('POST', '/api/sync/targets', { project: 'shop', app: 'web', node: 's2', path: join(dir, 'remote', 'other') })).json;
    expect((await call('POST', '/api/sync/sync', { target: t2.id })).status).toBe(200);
    const refused = await until(t2.id, (x) => x.state === 'FAILED', 'the refused login to fail');
    expect(refused).toMatchObject({ attempts: 1, error: { code: 'AUTH', reason: expect.stringMatching(/ssh login to node s2 .* was refused .*Permission denied \(publickey/) } });
    expect((await tree(join(dir, 'remote', 'other'))).size).toBe(0);
    expect((await call('GET', `/api/sync/nodes/${n2.id}`)).json).toMatchObject({ status: 'OFFLINE', status_reason: expect.stringMatching(/ssh login to node s2 .* was refused/) });
    // Back to v2: it is still in the server's cache.
    expect((await call('POST', '/api/sync/sync', { target, version: 'v2' })).status).toBe(200);
    const back = await until(target, (x) => x.version === 'v2' && x.state === 'SUCCESS', 'v2 again');
    expect(back.result.cache).toEqual({ hit: true, bytes_fetched: 0 });
    expect(new Map([...(await tree(remote()))].sort())).toEqual(expected('v2'));

    // Verify (seed 002) by an rsync dry run with checksums: OK while the node holds v2 exactly; a
    // file changed there (same size) is a CONFLICT that pauses the target and leaves the file alone.
    expect((await call('POST', `/api/sync/targets/${target}/verify`)).status).toBe(202);
    const ok = await until(target, (x) => x.source === 'verify' && ['SUCCESS', 'FAILED'].includes(x.state), 'the first verify');
    expect(ok).toMatchObject({ state: 'SUCCESS', result: { verified: true, files_checked: 4, via: 'rsync' } });
    await writeFile(join(remote(), 'css', 'site.css'), 'body{color:tan}');
    expect((await call('POST', `/api/sync/targets/${target}/verify`)).status).toBe(202);
    const bad = await until(target, (x) => x.source === 'verify' && x.id !== ok.id && ['SUCCESS', 'FAILED'].includes(x.state), 'the second verify');
    expect(bad).toMatchObject({ state: 'FAILED', attempts: 1, error: { code: 'CONFLICT', reason: expect.stringMatching(/^1 difference\(s\) between .* and v2: css\/site.css \(changed locally\)$/) } });
    expect((await call('GET', `/api/sync/targets/${target}`)).json).toMatchObject({ state: 'paused' });
    expect(await readFile(join(remote(), 'css', 'site.css'), 'utf8')).toBe('body{color:tan}');

    // on_local_change: fail: a file changed on the node since kk wrote it stops the next sync, which names it.
    const strictDir = join(dir, 'remote', 'strict');
    const strict = (await call('POST', '/api/sync/targets', { project: 'shop', app: 'web', node: 's1', path: strictDir, on_local_change: 'fail' })).json;
    expect((await call('POST', '/api/sync/sync', { target: strict.id, version: 'v1' })).status).toBe(200);
    await until(strict.id, (x) => x.version === 'v1' && x.state === 'SUCCESS', 'v1 on the strict target');
    await writeFile(join(strictDir, 'index.html'), 'edited on the node');
    expect((await call('POST', '/api/sync/sync', { target: strict.id, version: 'v2' })).status).toBe(200);
    const blocked = await until(strict.id, (x) => x.version === 'v2' && ['FAILED', 'SUCCESS'].includes(x.state), 'the sync over a local change');
    expect(blocked).toMatchObject({ state: 'FAILED', attempts: 1, error: { code: 'TARGET_CONFLICT', reason: expect.stringMatching(/^1 file\(s\) of v1 were changed on node s1 in .*strict since kk wrote them, and the target says on_local_change: fail: index.html \(changed on the node\)/) } });
    expect(await readFile(join(strictDir, 'index.html'), 'utf8')).toBe('edited on the node');
    expect(await readFile(join(strictDir, 'css', 'site.css'), 'utf8')).toBe('body{}');

    // A local pause on the node (kk pause --path) holds for the server's rsync as well.
    await pauseLocal({ target: strictDir, reason: 'upgrading the host', by: 'ops@node' });
    expect((await call('POST', '/api/sync/sync', { target: strict.id, version: 'v3' })).status).toBe(200);
    const held = await until(strict.id, (x) => x.version === 'v3' && ['FAILED', 'SUCCESS'].includes(x.state), 'the sync of a locally paused directory');
    expect(held).toMatchObject({ state: 'FAILED', error: { code: 'PAUSED', reason: expect.stringMatching(/strict on node s1 is paused by ops@node since .*: upgrading the host/) } });
    expect(await readFile(join(strictDir, 'index.html'), 'utf8')).toBe('edited on the node');
  }, 120_000);
});
