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

export async function startRegistry(opts: { startTimeoutMs?: number } = {}): Promise<RegistryBackend> {
  const why = registryUnavailable();
  if (why) throw new Error(`the registry cannot start: ${why}`);
  const dir = await mkdtemp(path.join(tmpdir(), 'kk-registry-'));
  const port = await freePort();
  const config = path.join(dir, 'config.yml');
  await writeFile(config, `version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: ${path.join(dir, 'data')}\nhttp:\n  addr: 127.0.0.1:${port}\n`);
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
