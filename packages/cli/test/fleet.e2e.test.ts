// The fleet end to end (issue 12, acceptance 1 and 2): a real `kk serve`, three real `kk agent`
// processes on this machine (each with its own state dir and target) and one ssh node (the
// testkit's sshd on 127.0.0.1, synced by the server with rsync), all targets of one app.
// Promote v2: every target holds v2 byte for byte (rsync -rcn), the ssh node's task log shows
// rsync, and the tasks' attempt start/finish times never have more than max_parallel_nodes (2)
// running at once across all four. One agent is killed with SIGKILL
// mid-task: its lease expires, the node goes OFFLINE, a report naming the dead attempt is
// refused, and the task is retried when the agent is back. Then the server is stopped right
// after a promote of v3 and started again on the same port: every target converges on v3.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SshdBackend, startSshd } from '@kk/testkit';
import { KK_BIN, type Sandbox, cleanEnv, pseudoRandom, rsyncDifferences, sandbox, spawnServe, writeTree } from './helpers.js';

const admin = `admin-${randomBytes(12).toString('hex')}`;
const FLEET_ENV = { KK_FLEET_HEARTBEAT_MS: '500', KK_FLEET_LEASE_MS: '3000', KK_FLEET_OFFLINE_MS: '3000', KK_FLEET_SWEEP_MS: '300', KK_SSH_POLL_MS: '300' };
const TARGETS = ['a1', 'a2', 'a3', 's1'];

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function until<T>(what: string, ms: number, fn: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + ms;
  for (let i = 0; ; i++) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('fleet: kk serve + 3 kk agent + 1 ssh node', () => {
  let sb: Sandbox;
  let sshd: SshdBackend;
  let port: number;
  let url: string;
  let server: ChildProcess | undefined;
  const agents = new Map<string, ChildProcess>();
  const agentLogs: Record<string, string> = {};
  let regToken: string;

  const api = async (method: string, path: string, body?: unknown, token = admin) => {
    const r = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : undefined };
  };

  const startServer = () =>
    spawnServe(['--store', sb.path('store'), '--listen', `127.0.0.1:${port}`], { cwd: sb.root, env: cleanEnv({ KK_ADMIN_TOKEN: admin, KK_STATE_DIR: sb.stateDir, ...FLEET_ENV }) });

  const startAgent = (name: string, first: boolean) => {
    const args = [KK_BIN, 'agent', '--server', url, '--name', name, '--tags', `role=web,n=${name}`, '--state-dir', sb.path('agents', name), '--poll-wait', '2'];
    if (first) args.push('--registration-token', regToken);
    const child = spawn(process.execPath, args, { cwd: sb.root, env: cleanEnv({ KK_STATE_DIR: sb.path('agents', name, 'kk') }), stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d: Buffer) => (agentLogs[name] = (agentLogs[name] ?? '') + d.toString()));
    agents.set(name, child);
    return child;
  };

  const stop = (child: ChildProcess | undefined, signal: NodeJS.Signals) =>
    new Promise<void>((resolve) => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill(signal);
    });

  /** Wait until every target's task for `version` succeeded; on a timeout, say where each one is. */
  const converged = async (version: string, ms: number) => {
    try {
      await until(`every target on ${version}`, ms, async () => {
        const v = (await tasks()).filter((t) => t.version === version);
        return v.length === TARGETS.length && v.every((t) => t.state === 'SUCCESS') ? true : undefined;
      });
    } catch (err) {
      const state = (await tasks().catch(() => [])).map((t) => `${t.id} ${t.node} ${t.version} ${t.state} attempts=${t.attempts} ${t.error ? `${t.error.code}: ${t.error.reason}` : ''}`);
      throw new Error(`${(err as Error).message}\ntasks:\n${state.join('\n')}\nagents:\n${Object.entries(agentLogs).map(([n, l]) => `${n}: ${l.split('\n').slice(-8).join('\n  ')}`).join('\n')}`);
    }
  };

  let t0 = Date.now();
  const mark = (what: string) => {
    if (process.env.KK_E2E_TIMES) console.log(`${what}: ${Date.now() - t0} ms`);
  };

  const tasks = async (state?: string) => (await api('GET', `/api/sync/tasks?project=shop&limit=500${state ? `&status=${state}` : ''}`)).json.items as Record<string, any>[];

  beforeAll(async () => {
    const t0 = Date.now();
    sb = await sandbox();
    sshd = await startSshd();
    port = await freePort();
    url = `http://127.0.0.1:${port}`;
    for (const v of ['v1', 'v2', 'v3']) {
      await writeTree(sb.path('builds', v), {
        'index.html': `<h1>${v}</h1>`,
        'assets/app.js': `console.log(${JSON.stringify(v)});\n`.repeat(200),
        'assets/big.bin': pseudoRandom(6 * 1024 * 1024, `big-${v}`),
        [`only-${v}.txt`]: v,
      });
    }
    server = await startServer();
    await writeTree(sb.path('ci'), { '.kkartifact.yml': `server_url: ${url}\ntoken: ${admin}\n` });
    for (const v of ['v1', 'v2', 'v3']) {
      const r = await sb.kk(['push', '-p', 'shop', '-a', 'web', '--version', v, '--path', sb.path('builds', v)], { cwd: sb.path('ci') });
      expect(r.code, r.stderr).toBe(0);
    }
    const t = await sb.kk(['node', 'token', 'create', '--server', url, '--token', admin, '--expires', '1h']);
    expect(t.code, t.stderr).toBe(0);
    regToken = t.stdout.trim();
    expect(regToken).toMatch(/^kkr_/);
    if (process.env.KK_E2E_TIMES) console.log(`setup ${Date.now() - t0} ms`);
  }, 180_000);

  afterAll(async () => {
    await Promise.all([...agents.values()].map((a) => stop(a, 'SIGKILL')));
    await stop(server, 'SIGKILL');
    await sshd?.stop();
    await sb?.cleanup();
  });

  it('promote v2: three agents and an ssh node converge byte for byte, never more than 2 at once; a SIGKILLed agent\'s task is retried when it is back', async () => {
    t0 = Date.now();
    for (const n of ['a1', 'a2', 'a3']) startAgent(n, true);
    await until('three ONLINE nodes', 30_000, async () => {
      const r = await api('GET', '/api/sync/nodes');
      return r.json.items?.length === 3 && r.json.items.every((n: { status: string }) => n.status === 'ONLINE');
    });
    mark('agents online');
    const listed = await sb.kkJson(['node', 'list', '--server', url, '--token', admin, '--tags', 'role=web']);
    const nodes = listed.json.items as Record<string, any>[];
    expect(nodes.map((n) => [n.name, n.status, n.tags.role])).toEqual([['a1', 'ONLINE', 'web'], ['a2', 'ONLINE', 'web'], ['a3', 'ONLINE', 'web']]);
    // The node token is in the agent's state dir, 0600.
    expect(JSON.parse(await readFile(sb.path('agents', 'a1', 'agent.json'), 'utf8')).token).toMatch(/^kkn_/);
    // One target through the CLI, the others through the API (each kk process costs a start-up).
    const added = await sb.kkJson(['target', 'add', '--server', url, '--token', admin, '-p', 'shop', '-a', 'web', '--node', 'a1', '--path', sb.path('targets', 'a1'), '--mode', 'full']);
    expect(added.code, added.stderr).toBe(0);
    expect(added.json).toMatchObject({ project: 'shop', app: 'web', path: sb.path('targets', 'a1'), strategy: 'mirror', mode: 'full', follows: 'promoted' });
    // The ssh node: the server logs in to the testkit's sshd with its key (host key trusted on first use).
    const ssh = await api('POST', '/api/sync/nodes', { name: 's1', kind: 'ssh', address: `${sshd.user}@127.0.0.1:${sshd.port}` });
    expect(ssh.status).toBe(201);
    expect((await api('PUT', `/api/sync/nodes/${ssh.json.id}/ssh`, { identity_file: sshd.keyFile })).status).toBe(200);
    for (const n of ['a2', 'a3', 's1']) expect((await api('POST', '/api/sync/targets', { project: 'shop', app: 'web', node: n, path: sb.path('targets', n) })).status).toBe(201);
    expect((await api('PUT', '/api/sync/projects/shop', { max_parallel_nodes: 2 })).status).toBe(200);

    const promoted = await sb.kk(['promote', '-p', 'shop', '-a', 'web', '--version', 'v2'], { cwd: sb.path('ci') });
    expect(promoted.code, promoted.stderr).toBe(0);
    // The first agent node seen running a task is the victim: SIGKILL it mid-task.
    mark('promoted');
    const running = await until('a running task on an agent', 30_000, async () => (await tasks('RUNNING')).find((t) => nodes.some((n) => n.id === t.node)));
    const victim = nodes.find((n) => n.id === running.node)!;
    await stop(agents.get(victim.name), 'SIGKILL');
    const victimToken = JSON.parse(await readFile(sb.path('agents', victim.name, 'agent.json'), 'utf8')).token as string;
    // Its lease expires (RETRYING, LEASE_EXPIRED) and the node goes OFFLINE.
    const retrying = await until('the lease to expire', 30_000, async () => {
      const t = (await api('GET', `/api/sync/tasks/${running.id}`)).json;
      return t.state === 'RETRYING' || (t.attempts >= 1 && t.error?.code === 'LEASE_EXPIRED') ? t : undefined;
    });
    mark('lease expired');
    expect(retrying.error).toMatchObject({ code: 'LEASE_EXPIRED' });
    await until('the victim OFFLINE', 30_000, async () => ((await api('GET', `/api/sync/nodes/${victim.id}`)).json.status === 'OFFLINE' ? true : undefined));
    // A report from the dead attempt is refused.
    const stale = await api('POST', `/api/sync/tasks/${running.id}/report`, { attempt_id: running.attempt_id, outcome: { ok: true, result: {} } }, victimToken);
    expect(stale.status).toBe(423); // LOCKED
    expect(stale.json.error.message).toMatch(/no longer current/);
    // The agent comes back (no registration token needed now) and the task is retried.
    mark('offline, stale refused');
    startAgent(victim.name, false);
    await converged('v2', 120_000);
    mark('converged v2');
    for (const n of TARGETS) expect(await rsyncDifferences(sb.path('builds', 'v2'), sb.path('targets', n))).toBe('');
    // The ssh node was synced by rsync (the server's command line and rsync's itemized changes in its log).
    const sshTask = (await api('GET', `/api/sync/tasks/${(await tasks()).find((t) => t.node === ssh.json.id && t.version === 'v2')!.id}`)).json;
    expect(sshTask.result).toMatchObject({ via: 'rsync' });
    const sshLines = sshTask.logs.map((l: { line: string }) => l.line) as string[];
    expect(sshLines.some((l) => /^rsync -az --delete --delay-updates --safe-links --exclude-from=/.test(l))).toBe(true);
    expect(sshLines).toContain('<f+++++++++ only-v2.txt');
    const retried = (await api('GET', `/api/sync/tasks/${running.id}`)).json;
    expect(retried.attempts).toBeGreaterThanOrEqual(2);
    expect(retried.logs.map((l: { line: string }) => l.line).join('\n')).toMatch(/attempt 1 failed: LEASE_EXPIRED/);

    // Never more than 2 running at once across all four nodes: each attempt runs from its task.running
    // event to the task's next end (succeeded, failed, retrying, canceled), at the times the server
    // recorded; the first start and the last end are the task's own started/finished.
    const events = (await api('GET', '/api/v1/events?limit=500')).json.items as { type: string; time: string; project?: string; details?: { task?: string } }[];
    const open = new Map<string, number>();
    const windows: { task: string; from: number; to: number }[] = [];
    for (const e of events.filter((x) => x.project === 'shop' && x.details?.task)) {
      const id = e.details!.task!;
      if (e.type === 'task.running') open.set(id, Date.parse(e.time));
      else if (['task.succeeded', 'task.failed', 'task.retrying', 'task.canceled'].includes(e.type) && open.has(id)) {
        windows.push({ task: id, from: open.get(id)!, to: Date.parse(e.time) });
        open.delete(id);
      }
    }
    const v2 = (await tasks()).filter((t) => t.version === 'v2');
    expect(v2.map((t) => t.node).sort()).toEqual([...nodes.map((n) => n.id), ssh.json.id].sort());
    for (const t of v2) {
      const w = windows.filter((x) => x.task === t.id);
      expect(w.length, `attempt windows of ${t.id}`).toBe(t.attempts);
      expect(Math.min(...w.map((x) => x.from))).toBe(Date.parse(t.started));
      expect(Math.max(...w.map((x) => x.to))).toBe(Date.parse(t.finished));
    }
    // Sweep: at equal times an end comes before a start (a slot released and taken in the same ms).
    const points = windows.flatMap((w) => [{ t: w.from, d: 1 }, { t: w.to, d: -1 }]).sort((a, b) => a.t - b.t || a.d - b.d);
    let now = 0;
    let max = 0;
    for (const p of points) max = Math.max(max, (now += p.d));
    expect(windows.length).toBeGreaterThanOrEqual(5);
    expect(max).toBeLessThanOrEqual(2);
    expect(max).toBeGreaterThanOrEqual(1);
  }, 240_000);

  it('the server stopped right after a promote and started again: nothing is lost, every target converges on v3', async () => {
    const promoted = await sb.kk(['promote', '-p', 'shop', '-a', 'web', '--version', 'v3'], { cwd: sb.path('ci') });
    expect(promoted.code, promoted.stderr).toBe(0);
    await until('a v3 task', 10_000, async () => (await tasks()).some((t) => t.version === 'v3'));
    t0 = Date.now();
    await stop(server, 'SIGTERM');
    server = await startServer();
    mark('server restarted');
    await converged('v3', 120_000);
    mark('converged v3');
    for (const n of TARGETS) expect(await rsyncDifferences(sb.path('builds', 'v3'), sb.path('targets', n))).toBe('');
    const st = await sb.kkJson(['target', 'status', '--server', url, '--token', admin, (await api('GET', '/api/sync/targets?project=shop')).json.items[0].id]);
    expect(st.json.history[0]).toMatchObject({ to_version: 'v3', status: 'SUCCESS' });
    // SIGTERM: each agent stops cleanly.
    await Promise.all([...agents.values()].map((a) => stop(a, 'SIGTERM')));
    mark('agents stopped');
    expect([...agents.values()].map((a) => a.exitCode)).toEqual([0, 0, 0]);
  }, 240_000);
});
