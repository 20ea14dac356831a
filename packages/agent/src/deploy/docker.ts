// `docker`: through the Docker Engine HTTP API on DOCKER_HOST (a unix socket), with undici; no
// CLI output is parsed. Pull the image (progress from the pull's JSON stream: pulling 10-50),
// stop the container of that name (kept, renamed `<name>-kk-previous`, with its image and
// config), create and start the new one with ports, env, volumes and restart policy. Rollback
// removes the new container and starts the previous one again under its name.
import { KkError } from '@kk/core';
import { Client } from 'undici';
import type { AppliedResult, DeployKind, KindContext } from './runner.js';
import { type DockerSpec, PROGRESS } from './types.js';

export interface DockerKindEnv {
  /** `unix:///path.sock` or a bare path; default DOCKER_HOST, then /var/run/docker.sock. */
  dockerHost?: string;
}

export function socketPathOf(host = process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock'): string {
  if (host.startsWith('unix://')) return host.slice('unix://'.length);
  if (host.startsWith('/')) return host;
  throw new KkError('CONFIG_INVALID', `DOCKER_HOST ${host} is not a unix socket`, { hint: 'set DOCKER_HOST=unix:///var/run/docker.sock (tcp engines are not supported)' });
}

interface Res {
  status: number;
  body: unknown;
}

/** A small Docker Engine API client over a unix socket. */
export class DockerEngine {
  private readonly client: Client;
  constructor(readonly socketPath: string) {
    this.client = new Client('http://localhost', { socketPath, bodyTimeout: 0, headersTimeout: 120_000 });
  }

  async call(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<Res> {
    let r;
    try {
      r = await this.client.request({
        method,
        path: `/v1.41${path}`,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (err) {
      throw new KkError('BACKEND', `the Docker engine at ${this.socketPath} is unreachable: ${(err as Error).message}`, { hint: 'is the engine running? check DOCKER_HOST' });
    }
    const text = await r.body.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON
    }
    return { status: r.statusCode, body: parsed };
  }

  async ok(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, accept: number[] = []): Promise<Res> {
    const r = await this.call(method, path, body);
    if (r.status >= 300 && !accept.includes(r.status)) {
      const msg = (r.body as { message?: string } | undefined)?.message ?? String(r.body);
      throw new KkError(r.status === 404 ? 'NOT_FOUND' : 'BACKEND', `Docker ${method} ${path.split('?')[0]}: ${r.status} ${msg}`, { hint: 'see the engine logs' });
    }
    return r;
  }

  /** Pull with progress (0..1 from the layers' byte counts). */
  async pull(image: string, onProgress: (f: number, line: string) => void): Promise<void> {
    let r;
    try {
      r = await this.client.request({ method: 'POST', path: `/v1.41/images/create?fromImage=${encodeURIComponent(image)}`, headers: {} });
    } catch (err) {
      throw new KkError('BACKEND', `the Docker engine at ${this.socketPath} is unreachable: ${(err as Error).message}`, { hint: 'is the engine running? check DOCKER_HOST' });
    }
    if (r.statusCode >= 300) {
      const t = await r.body.text();
      throw new KkError(r.statusCode === 404 ? 'NOT_FOUND' : 'BACKEND', `pulling ${image}: ${r.statusCode} ${t.slice(0, 300)}`, { hint: 'check the image name and that the registry is reachable from the engine' });
    }
    const layers = new Map<string, { current: number; total: number }>();
    let rest = '';
    let error: string | undefined;
    for await (const chunk of r.body as AsyncIterable<Buffer>) {
      const lines = (rest + chunk.toString('utf8')).split('\n');
      rest = lines.pop() ?? '';
      for (const l of lines) {
        if (!l.trim()) continue;
        let m: { id?: string; status?: string; error?: string; progressDetail?: { current?: number; total?: number } };
        try {
          m = JSON.parse(l);
        } catch {
          continue;
        }
        if (m.error) error = m.error;
        if (m.id && m.progressDetail?.total) layers.set(m.id, { current: m.progressDetail.current ?? 0, total: m.progressDetail.total });
        let cur = 0;
        let tot = 0;
        for (const v of layers.values()) {
          cur += v.current;
          tot += v.total;
        }
        onProgress(tot ? cur / tot : 0, `${m.id ? `${m.id}: ` : ''}${m.status ?? m.error ?? ''}`);
      }
    }
    if (error) throw new KkError('BACKEND', `pulling ${image}: ${error}`, { hint: 'check the image name and that the registry is reachable from the engine' });
  }

  async inspect(name: string): Promise<ContainerInfo | undefined> {
    const r = await this.ok('GET', `/containers/${encodeURIComponent(name)}/json`, undefined, [404]);
    return r.status === 404 ? undefined : (r.body as ContainerInfo);
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

export interface ContainerInfo {
  Id: string;
  Name: string;
  Image: string;
  Config: { Image: string; Env?: string[]; Cmd?: string[]; ExposedPorts?: Record<string, unknown> };
  HostConfig: Record<string, unknown>;
  State: { Status: string; Running: boolean; ExitCode: number };
}

export function createBody(spec: DockerSpec): Record<string, unknown> {
  const exposed: Record<string, object> = {};
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const p of spec.ports ?? []) {
    const k = `${p.container}/${p.protocol ?? 'tcp'}`;
    exposed[k] = {};
    (bindings[k] ??= []).push({ HostIp: p.host_ip ?? '', HostPort: String(p.host) });
  }
  return {
    Image: spec.image,
    Env: Object.entries(spec.container_env ?? {}).map(([k, v]) => `${k}=${v}`),
    ...(spec.cmd ? { Cmd: spec.cmd } : {}),
    ExposedPorts: exposed,
    Labels: { 'kk.deploy': 'true' },
    HostConfig: {
      PortBindings: bindings,
      Binds: spec.volumes ?? [],
      RestartPolicy: { Name: spec.restart ?? 'no' },
      ...(spec.network ? { NetworkMode: spec.network } : {}),
    },
  };
}

export class DockerKind implements DeployKind {
  constructor(
    private readonly spec: DockerSpec,
    private readonly env: DockerKindEnv = {},
  ) {}

  check(): void {
    if (!this.spec.image || !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(this.spec.name ?? '')) throw new KkError('CONFIG_INVALID', 'a docker deploy needs an image and a container name ([a-zA-Z0-9_.-])', { hint: 'give --image and --name' });
    socketPathOf(this.env.dockerHost);
  }

  private engine(): DockerEngine {
    return new DockerEngine(socketPathOf(this.env.dockerHost));
  }

  async apply(ctx: KindContext): Promise<AppliedResult> {
    const d = this.engine();
    const name = this.spec.name;
    const prevName = `${name}-kk-previous`;
    try {
      await ctx.save({ version: this.spec.image });
      await ctx.status('pulling', PROGRESS.pulling[0], `pulling ${this.spec.image}`);
      let last = 10;
      let pending: Promise<void> = Promise.resolve();
      await d.pull(this.spec.image, (f, line) => {
        const p = 10 + Math.floor(f * 40);
        if (line) ctx.log(`pull ${line}`);
        if (p >= last + 5) {
          last = p;
          pending = pending.then(() => ctx.status('pulling', p));
        }
      });
      await pending;
      const old = await d.inspect(name);
      await ctx.status('stopping', PROGRESS.stopping, old ? `stopping ${name} (${old.Id.slice(0, 12)})` : `no container named ${name} yet`);
      if (old) {
        await ctx.save({ previous: { id: old.Id, image: old.Config.Image, running: old.State.Running, config: old.Config, host_config: old.HostConfig } });
        const older = await d.inspect(prevName);
        if (older) await d.ok('DELETE', `/containers/${older.Id}?force=true`);
        if (old.State.Running) await d.ok('POST', `/containers/${old.Id}/stop?t=${this.spec.stop_timeout ?? 10}`, undefined, [304]);
        await d.ok('POST', `/containers/${old.Id}/rename?name=${encodeURIComponent(prevName)}`);
      } else {
        await ctx.save({ previous: null });
      }
      await ctx.status('starting', PROGRESS.starting, `starting ${name} from ${this.spec.image}`);
      const created = await d.ok('POST', `/containers/create?name=${encodeURIComponent(name)}`, createBody(this.spec));
      const id = (created.body as { Id: string }).Id;
      await ctx.save({ created: id });
      await d.ok('POST', `/containers/${id}/start`, undefined, [304]);
      const now = await d.inspect(id);
      ctx.log(`container ${name} ${id.slice(0, 12)} is ${now?.State.Status ?? 'gone'}`);
      if (!now?.State.Running && now?.State.Status === 'exited') {
        throw new KkError('BACKEND', `container ${name} exited at once with code ${now.State.ExitCode}`, { hint: 'see the container logs' });
      }
      return { result: { container_id: id, image: this.spec.image, previous_container: old?.Id ?? null }, version: this.spec.image };
    } finally {
      await d.close();
    }
  }

  async rollback(ctx: KindContext): Promise<{ to?: string }> {
    const d = this.engine();
    const name = this.spec.name;
    try {
      const created = ctx.saved.created as string | undefined;
      const cur = await d.inspect(name);
      if (created && cur && cur.Id === created) await d.ok('DELETE', `/containers/${created}?force=true`);
      const prev = ctx.saved.previous as { id: string; image: string; running: boolean } | null | undefined;
      if (!prev) return { to: 'none' };
      const p = await d.inspect(prev.id);
      let id = prev.id;
      if (p) {
        if (p.Name.replace(/^\//, '') !== name) await d.ok('POST', `/containers/${prev.id}/rename?name=${encodeURIComponent(name)}`);
      } else {
        // Removed meanwhile: create it again from the image and config kept at deploy time.
        const saved = ctx.saved.previous as { config?: Record<string, unknown>; host_config?: Record<string, unknown> };
        if (!saved.config) throw new KkError('NOTHING_TO_ROLLBACK', `the previous container ${prev.id.slice(0, 12)} is gone and its config was not kept`, { hint: 'deploy a known good image' });
        const created = await d.ok('POST', `/containers/create?name=${encodeURIComponent(name)}`, { ...saved.config, Image: prev.image, HostConfig: saved.host_config ?? {} });
        id = (created.body as { Id: string }).Id;
        ctx.log(`previous container was gone: created ${id.slice(0, 12)} from ${prev.image} and its saved config`);
      }
      if (prev.running) await d.ok('POST', `/containers/${id}/start`, undefined, [304]);
      ctx.log(`container ${name} is ${id.slice(0, 12)} (${prev.image}) again`);
      return { to: prev.image };
    } finally {
      await d.close();
    }
  }
}
