// A real Docker Engine API for tests: `podman system service` on a unix socket in a temp
// directory, with its own storage (vfs graph root and run root in that directory), the runc
// runtime (crun fails on kernels with hybrid cgroups), `default_ulimits = []` in a private
// containers.conf (CONTAINERS_CONF) and a registries.conf that lets it pull from plain-HTTP
// registries on 127.0.0.1. stop() removes every container it ran, stops the service and removes
// the directory. `buildBusyboxImage` makes a tiny image offline: `podman import` of a tar holding
// /bin/busybox (busybox-static).
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { guardChild } from './process.js';

const run = promisify(execFile);
const RUNC = '/usr/sbin/runc';
const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'];

export interface PodmanOptions {
  /** Registries (host:port) it may reach over plain HTTP. */
  insecureRegistries?: string[];
  startTimeoutMs?: number;
}

export interface PodmanBackend {
  /** `unix:///.../engine.sock`: the DOCKER_HOST for an Engine API client. */
  dockerHost: string;
  socketPath: string;
  /** Environment for podman CLI calls against the same storage. */
  env: Record<string, string>;
  /** Run the podman CLI against this instance's storage (fixtures only: import, push). */
  podman(args: string[]): Promise<string>;
  /** Build `ref` from busybox-static: a tar of /bin/busybox imported with `cmd` as its CMD. */
  buildBusyboxImage(ref: string, cmd: string[]): Promise<void>;
  stop(): Promise<void>;
}

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d && existsSync(path.join(d, bin)));
}

/** Why podman cannot run here, or undefined when it can. */
export function podmanUnavailable(): string | undefined {
  if (!onPath('podman')) return 'podman is not on PATH (Debian: apt-get install podman)';
  if (!existsSync(RUNC)) return `${RUNC} is missing (Debian: apt-get install runc)`;
  if (!BUSYBOX.some((b) => existsSync(b))) return 'busybox is missing (Debian: apt-get install busybox-static)';
  if (process.getuid?.() !== 0) return 'the podman tests run podman as root';
  return undefined;
}

export async function startPodman(opts: PodmanOptions = {}): Promise<PodmanBackend> {
  const why = podmanUnavailable();
  if (why) throw new Error(`podman cannot start: ${why}`);
  const dir = await mkdtemp(path.join(tmpdir(), 'kk-podman-'));
  const root = path.join(dir, 'root');
  const runroot = path.join(dir, 'run');
  const socketPath = path.join(dir, 'engine.sock');
  await writeFile(path.join(dir, 'containers.conf'), `[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n`);
  await writeFile(path.join(dir, 'storage.conf'), `[storage]\ndriver = "vfs"\ngraphroot = "${root}"\nrunroot = "${runroot}"\n`);
  const regs = (opts.insecureRegistries ?? []).map((r) => `[[registry]]\nlocation = "${r}"\ninsecure = true\n`).join('');
  await writeFile(path.join(dir, 'registries.conf'), `unqualified-search-registries = []\n${regs}`);
  const env = {
    CONTAINERS_CONF: path.join(dir, 'containers.conf'),
    CONTAINERS_STORAGE_CONF: path.join(dir, 'storage.conf'),
    CONTAINERS_REGISTRIES_CONF: path.join(dir, 'registries.conf'),
    XDG_RUNTIME_DIR: path.join(dir, 'xdg'),
  };
  await mkdir(env.XDG_RUNTIME_DIR, { recursive: true });
  const base = ['--runtime', RUNC, '--root', root, '--runroot', runroot, '--tmpdir', path.join(dir, 'tmp')];
  const podman = async (args: string[]) => (await run('podman', [...base, ...args], { env: { ...process.env, ...env }, maxBuffer: 16 << 20 })).stdout;
  const child = spawn('podman', [...base, 'system', 'service', '--time=0', `unix://${socketPath}`], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output = (output + d).slice(-8192)));
  const stop = guardChild(child, async () => {
    await podman(['rm', '--all', '--force', '--time', '0']).catch(() => {});
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  });
  const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`podman system service exited with ${child.exitCode}: ${output.trim()}`);
      if (existsSync(socketPath)) {
        const ok = await fetchVersion(socketPath);
        if (ok) break;
      }
      if (Date.now() > deadline) throw new Error(`podman system service did not answer on ${socketPath}: ${output.trim()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    dockerHost: `unix://${socketPath}`,
    socketPath,
    env,
    podman,
    async buildBusyboxImage(ref, cmd) {
      const img = path.join(dir, `img-${Math.random().toString(36).slice(2)}`);
      await mkdir(path.join(img, 'bin'), { recursive: true });
      await copyFile(BUSYBOX.find((b) => existsSync(b))!, path.join(img, 'bin', 'busybox'));
      await run('tar', ['-C', img, '-cf', `${img}.tar`, 'bin']);
      await podman(['import', '--change', `CMD ${JSON.stringify(cmd)}`, `${img}.tar`, ref]);
      await rm(img, { recursive: true, force: true });
      await rm(`${img}.tar`, { force: true });
    },
    stop,
  };
}

async function fetchVersion(socketPath: string): Promise<boolean> {
  const { request } = await import('node:http');
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/version', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.once('error', () => resolve(false));
    req.once('timeout', () => req.destroy());
    req.end();
  });
}
