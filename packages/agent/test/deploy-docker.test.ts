// The docker kind against a real Docker Engine API: podman's service (runc, private storage)
// pulling from a real registry on 127.0.0.1 (the CNCF distribution registry). Under CI=true a
// backend that cannot start fails the run.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type PodmanBackend, type RegistryBackend, podmanUnavailable, registryUnavailable, startPodman, startRegistry } from '@kk/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { deploy } from '../src/index.js';

const unavailable = podmanUnavailable() ?? registryUnavailable();
if (unavailable && process.env.CI) throw new Error(`CI must run the docker deploy tests: ${unavailable}`);

let dir: string;
let reg: RegistryBackend | undefined;
let pm: PodmanBackend | undefined;
let port: number;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

beforeAll(async () => {
  if (unavailable) return;
  dir = await mkdtemp(join(tmpdir(), 'kk-deploy-docker-'));
  reg = await startRegistry();
  pm = await startPodman({ insecureRegistries: [reg.host] });
  // A web server answering with $MSG, and one whose container exits at once.
  await pm.buildBusyboxImage('localhost/kk-web:1', ['/bin/busybox', 'sh', '-c', 'mkdir -p /w && echo "$MSG" > /w/index.html && exec busybox httpd -f -p 8080 -h /w']);
  await pm.buildBusyboxImage('localhost/kk-web:2', ['/bin/busybox', 'false']);
  for (const t of ['1', '2']) {
    await pm.podman(['push', '--tls-verify=false', `localhost/kk-web:${t}`, `docker://${reg.host}/kk/web:${t}`]);
    await pm.podman(['rmi', `localhost/kk-web:${t}`]);
  }
  port = await freePort();
}, 120_000);

afterAll(async () => {
  await pm?.stop();
  await reg?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

async function page(): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}/`);
  return (await r.text()).trim();
}

it.skipIf(!!unavailable)(`docker: pulled from the registry, old container stopped, new started, health passes; an image that exits at once rolls back to the previous container${unavailable ? ` (skipped: ${unavailable})` : ''}`, async () => {
  const engine = new deploy.DockerEngine(pm!.socketPath);
  const reports: deploy.DeployStatusReport[] = [];
  const dep = new deploy.Deployer({ journalDir: join(dir, 'journal'), kinds: deploy.defaultKinds({ docker: { dockerHost: pm!.dockerHost } }), onReport: (r) => void reports.push(r) });
  const health = { type: 'http' as const, port: 0, path: '/', retries: 20, interval_ms: 250, timeout_ms: 2000, deadline_ms: 30_000 };
  health.port = port;
  const spec = (image: string, msg: string): deploy.DockerSpec => ({
    type: 'docker',
    image: `${reg!.host}/kk/web:${image}`,
    name: 'kk-web',
    ports: [{ container: 8080, host: port, host_ip: '127.0.0.1' }],
    container_env: { MSG: msg },
    restart: 'no',
    stop_timeout: 1,
    health,
    timeout_ms: 120_000,
  });
  try {
    const e1 = await dep.deploy('dk-1', spec('1', 'first'));
    expect(e1.status, e1.error).toBe('success');
    expect(e1.history.map((h) => h.status)).toEqual(['pending', 'executing', 'pulling', 'stopping', 'starting', 'health_check', 'success']);
    expect(await page()).toBe('first');
    const c1 = e1.result.container_id as string;

    const e2 = await dep.deploy('dk-2', spec('1', 'second'));
    expect(e2.status, e2.error).toBe('success');
    expect(e2.result.previous_container).toBe(c1);
    expect(await page()).toBe('second');
    const old = await engine.inspect(c1);
    expect(old?.State.Running).toBe(false);
    expect(old?.Name).toBe('/kk-web-kk-previous');
    const c2 = e2.result.container_id as string;
    expect((await engine.inspect('kk-web'))?.Id).toBe(c2);
    expect((await engine.inspect(c2))?.HostConfig.RestartPolicy).toMatchObject({ Name: 'no' });
    // The monitor sees the containers kk deployed: the running one with its memory, the kept previous one exited.
    const mon = await deploy.monitorContainers(engine);
    const byName = Object.fromEntries(mon.map((m) => [m.name, m]));
    expect(Object.keys(byName).sort()).toEqual(['kk-web', 'kk-web-kk-previous']);
    expect(byName['kk-web']).toMatchObject({ id: c2, state: 'running' });
    expect(byName['kk-web']!.memory_bytes).toBeGreaterThan(0);
    expect(byName['kk-web-kk-previous']).toMatchObject({ id: c1, state: 'exited' });

    const e3 = await dep.deploy('dk-3', spec('2', 'third'));
    const s3 = e3.history.map((h) => h.status);
    expect(s3.slice(0, 5)).toEqual(['pending', 'executing', 'pulling', 'stopping', 'starting']);
    expect(s3.slice(-4)).toEqual(['failed', 'rolling_back', 'health_check', 'rolled_back']);
    expect(e3.bad_version).toBe(`${reg!.host}/kk/web:2`);
    expect(e3.rollback).toMatchObject({ success: true, to: `${reg!.host}/kk/web:1`, health_check: { success: true, check_type: 'http' } });
    const now = await engine.inspect('kk-web');
    expect(now?.Id).toBe(c2);
    expect(now?.State.Running).toBe(true);
    expect(await page()).toBe('second');
    expect(await engine.inspect(e3.result.container_id as string ?? 'none')).toBeUndefined();
    // After the rollback only the restored container is left (the failed one was removed).
    expect((await deploy.monitorContainers(engine)).map((m) => [m.name, m.id, m.state])).toEqual([['kk-web', c2, 'running']]);
    // Pull progress came through the engine's JSON stream.
    expect(e1.logs.some((l) => / pull /.test(l))).toBe(true);
  } finally {
    await engine.close();
  }
}, 240_000);
