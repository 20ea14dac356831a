// A real OCI registry for tests: the CNCF distribution registry (`docker-registry serve`) on
// 127.0.0.1 with its storage in a temp directory that stop() removes.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { guardChild, waitForLine } from './process.js';

const BIN = '/usr/bin/docker-registry';

export interface RegistryBackend {
  /** `127.0.0.1:<port>`, the registry part of an image reference. */
  host: string;
  stop(): Promise<void>;
}

export function registryUnavailable(): string | undefined {
  return existsSync(BIN) ? undefined : `${BIN} is missing (Debian: apt-get install docker-registry)`;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface RegistryOptions {
  startTimeoutMs?: number;
  /** Allow DELETE of manifests and blobs (`storage.delete.enabled`). Default false, distribution's default. */
  deleteEnabled?: boolean;
  /** Token auth (`auth.token`): the token server's realm URL, service, issuer and signing certificate (PEM file). */
  tokenAuth?: { realm: string; service: string; issuer: string; rootCertBundle: string };
  /** Basic auth from an htpasswd file (bcrypt entries). */
  htpasswd?: string;
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<RegistryBackend> {
  const why = registryUnavailable();
  if (why) throw new Error(`the registry cannot start: ${why}`);
  const dir = await mkdtemp(path.join(tmpdir(), 'kk-registry-'));
  const port = await freePort();
  const config = path.join(dir, 'config.yml');
  let yaml = `version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: ${path.join(dir, 'data')}\n`;
  if (opts.deleteEnabled) yaml += '  delete:\n    enabled: true\n';
  yaml += `http:\n  addr: 127.0.0.1:${port}\n`;
  const t = opts.tokenAuth;
  if (t) yaml += `auth:\n  token:\n    realm: "${t.realm}"\n    service: "${t.service}"\n    issuer: "${t.issuer}"\n    rootcertbundle: "${t.rootCertBundle}"\n`;
  else if (opts.htpasswd) yaml += `auth:\n  htpasswd:\n    realm: kk-test\n    path: "${opts.htpasswd}"\n`;
  await writeFile(config, yaml);
  const child = spawn(BIN, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  const stop = guardChild(child, () => rm(dir, { recursive: true, force: true }));
  try {
    await waitForLine(child, 'docker-registry', /listening on 127\.0\.0\.1:\d+/, opts.startTimeoutMs ?? 20_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { host: `127.0.0.1:${port}`, stop };
}
