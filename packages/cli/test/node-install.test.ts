// `kk node install ssh://...` (issue 12, seed 000 "auto install") against the testkit's sshd on
// 127.0.0.1 and a real kk server: a host whose Node.js is too old is refused before anything is
// copied; then kk copies itself to the host's prefix, writes agent.env and the unit file, starts
// the agent with nohup (no systemd here), the agent enrols and the node shows ONLINE; installing
// again upgrades in place: a new agent process, the same node.
import { execFile } from 'node:child_process';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store, createMemoryDriver } from '@kk/core';
import { KkServer, createKkServer } from '@kk/server';
import { type SshdBackend, startSshd, sshdUnavailable } from '@kk/testkit';
import { agentUnit } from '../src/commands/node/install.js';
import { REPO_ROOT, type Sandbox, sandbox } from './helpers.js';

const run = promisify(execFile);
const admin = 'admin-node-install-test-0123456789';
const why = sshdUnavailable();

it('adapts packaging/kk-agent.service to the install prefix (system and user units)', async () => {
  const template = await readFile(join(REPO_ROOT, 'packaging', 'kk-agent.service'), 'utf8');
  const sys = agentUnit(template, { prefix: '/opt/kk', user: false, date: '2026-01-01T00:00:00Z' });
  expect(sys).toMatch(/^# Written by kk node install on 2026-01-01T00:00:00Z/);
  expect(sys).toContain('\nEnvironmentFile=/opt/kk/agent.env\n');
  expect(sys).toContain('\nEnvironment=KK_AGENT_STATE_DIR=/opt/kk/state\n');
  expect(sys).toContain('\nExecStart=/opt/kk/bin/kk agent\n');
  expect(sys).toContain('\nWantedBy=multi-user.target');
  expect(sys).not.toMatch(/^StateDirectory/m);
  // Everything else of the template's service section is kept.
  for (const l of ['KillSignal=SIGTERM', 'Restart=always', 'NoNewPrivileges=true']) expect(sys).toContain(`\n${l}\n`);
  expect(agentUnit(template, { prefix: '/home/u/.kk/agent', user: true, date: 'd' })).toContain('\nWantedBy=default.target');
});

describe.skipIf(why !== undefined && process.env.CI !== 'true')('kk node install over ssh', () => {
  let sb: Sandbox;
  let sshd: SshdBackend;
  let server: KkServer;
  let url: string;
  let reg: string;
  const prefix = () => sb.path('host', '.kk', 'agent');
  const sshFlags = () => [`ssh://${sshd.user}@127.0.0.1:${sshd.port}`, '--identity', sshd.keyFile, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null'];

  async function call(method: string, path: string, body?: unknown) {
    const r = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    return { status: r.status, json: (await r.json()) as Record<string, any> };
  }

  beforeAll(async () => {
    if (why) throw new Error(`CI=true but ${why}`);
    sb = await sandbox();
    sshd = await startSshd();
    server = await createKkServer({ store: await Store.open(createMemoryDriver(), { create: true }), adminToken: admin, log: false, db: `sqlite://${sb.path('kk.db')}` });
    url = await server.listen('127.0.0.1:0');
    reg = (await call('POST', '/api/sync/registration-tokens', { expires: '1h' })).json.token;
  }, 60_000);

  afterAll(async () => {
    // Stop the agent the install started (nohup: its pid is in the prefix), bounded.
    const pid = Number(await readFile(join(prefix(), 'agent.pid'), 'utf8').catch(() => ''));
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGTERM');
        for (let i = 0; i < 60; i++) {
          process.kill(pid, 0);
          await new Promise((r) => setTimeout(r, 250));
        }
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await server?.close();
    await sshd?.stop();
    await sb?.cleanup();
  });

  it('refuses a host whose Node.js is older than 20, before copying anything', async () => {
    const old = sb.path('node18');
    await writeFile(old, '#!/bin/sh\necho v18.19.0\n');
    await chmod(old, 0o755);
    const r = await sb.kk(['node', 'install', ...sshFlags(), '--server', url, '--registration-token', reg, '--prefix', prefix(), '--node', old]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`has Node.js v18.19.0 at ${old}; kk needs 20 or later`));
    expect(r.stderr).toMatch(/upgrade Node.js on the host/);
    expect(await stat(prefix()).catch(() => undefined)).toBeUndefined();
  }, 60_000);

  it('installs kk, starts the agent with nohup, and the node is ONLINE', async () => {
    const r = await sb.kk(['node', 'install', ...sshFlags(), '--server', url, '--registration-token', reg, '--prefix', prefix(), '--name', 'installed-1', '--tags', 'role=web', '--start', 'nohup', '--token', admin]);
    expect(r.stderr, r.stdout).toMatch(/\[1\/6\] connecting to .*Node\.js/);
    for (const n of [2, 3, 4, 5, 6]) expect(r.stderr).toContain(`[${n}/6]`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/node installed-1 \(nd-[0-9a-z-]+\) installed on .* agent started with nohup: ONLINE/);

    const node = (await call('GET', '/api/sync/nodes/installed-1')).json;
    expect(node).toMatchObject({ name: 'installed-1', kind: 'agent', status: 'ONLINE', tags: { role: 'web' } });
    // What the host holds: the release, the wrapper, agent.env (0600), the unit made from packaging/kk-agent.service.
    const env = await readFile(join(prefix(), 'agent.env'), 'utf8');
    expect(env).toContain(`KK_SERVER=${url}\n`);
    expect(env).toContain(`KK_AGENT_STATE_DIR=${prefix()}/state\n`);
    expect((await stat(join(prefix(), 'agent.env'))).mode & 0o777).toBe(0o600);
    const unit = await readFile(join(prefix(), 'kk-agent.service'), 'utf8');
    expect(unit).toContain(`ExecStart=${prefix()}/bin/kk agent`);
    expect(unit).toContain(`EnvironmentFile=${prefix()}/agent.env`);
    expect(unit).toContain('KillSignal=SIGTERM');
    expect(unit).not.toMatch(/^StateDirectory=/m);
    expect(unit).toMatch(/^# Written by kk node install on .* from packaging\/kk-agent.service/);
    expect(unit).not.toContain('/etc/kk-agent.env');
    const version = await run(join(prefix(), 'bin', 'kk'), ['--version']);
    expect(version.stdout).toMatch(/^kk\/\d+\.\d+\.\d+/);
    // The agent keeps its node token in its state dir, readable by it alone.
    expect((await stat(join(prefix(), 'state', 'agent.json'))).mode & 0o077).toBe(0);

    // Again: an upgrade. The new release replaces the agent process; the node keeps its identity.
    const pid1 = Number(await readFile(join(prefix(), 'agent.pid'), 'utf8'));
    const again = await sb.kkJson(['node', 'install', ...sshFlags(), '--server', url, '--registration-token', reg, '--prefix', prefix(), '--name', 'installed-1', '--start', 'nohup', '--token', admin]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.json).toMatchObject({ node: node.id, name: 'installed-1', started: 'nohup', status: 'ONLINE' });
    const pid2 = Number(await readFile(join(prefix(), 'agent.pid'), 'utf8'));
    expect(pid2).not.toBe(pid1);
    // The old agent is gone (a zombie nobody reaped yet counts as gone).
    expect(await readFile(`/proc/${pid1}/stat`, 'utf8').then((t) => !/^\d+ \(.*\) Z /.test(t), () => false)).toBe(false);
    expect((await call('GET', '/api/sync/nodes')).json.items.filter((n: { name: string }) => n.name === 'installed-1')).toHaveLength(1);
  }, 180_000);
});
