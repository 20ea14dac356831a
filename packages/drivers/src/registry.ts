// The one map from store URL scheme to driver factory. A plain path means the file driver.
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { type FallbackEvent, KkError, isOutage, withFallback, withRateLimit } from '@kk/core';
import type { Driver } from '@kk/core';
import { createFileDriver } from './file.js';

export interface OpenDriverOptions {
  /** Directory a relative store path is resolved against. Default: `process.cwd()`. */
  cwd?: string;
  /** Bearer token for `http(s):` stores. Default: the URL's user name, else `KK_TOKEN`. */
  token?: string;
}

/** Builds a driver from a parsed store URL. Throw `KkError('CONFIG_INVALID')` for a bad URL. */
export type DriverFactory = (url: URL, opts: OpenDriverOptions) => Driver | Promise<Driver>;

const factories = new Map<string, DriverFactory>();

/** Registers the factory for `scheme` (`s3`, or `s3:`). Throws a TypeError if already taken. */
export function registerDriver(scheme: string, factory: DriverFactory): void {
  const name = scheme.toLowerCase().replace(/:$/, '');
  if (!/^[a-z][a-z0-9+.-]+$/.test(name)) throw new TypeError(`invalid store scheme "${scheme}"`);
  if (factories.has(name)) throw new TypeError(`store scheme "${name}:" is already registered`);
  factories.set(name, factory);
}

/**
 * Opens the store at `url`: `scheme://...` picks the registered driver; anything without a
 * scheme is a file-system path, relative ones resolved against `opts.cwd`.
 */
export async function openDriver(url: string, opts: OpenDriverOptions = {}): Promise<Driver> {
  const parsed = parseStoreUrl(url, opts.cwd ?? process.cwd());
  const scheme = parsed.protocol.slice(0, -1);
  const factory = factories.get(scheme);
  if (!factory) {
    const supported = [...factories.keys()].sort().join(', ');
    throw new KkError('CONFIG_INVALID', `unknown store scheme "${scheme}:" — supported: ${supported}`, {
      details: { store: describeStoreUrl(url) },
    });
  }
  return factory(parsed, opts);
}

/**
 * Stores tried in order (seed 004): the first that opens serves, and a later call that fails with
 * a backend outage moves on to the next (core's withFallback); a store that cannot even be opened
 * (a kk server that is down) is skipped the same way. Reads are capped at `rateLimit` a second.
 * `events` lists every switch, for the result.
 */
export async function openDriverChain(
  stores: readonly { url: string; opts?: OpenDriverOptions }[],
  o: { rateLimit?: number; onFallback?: (e: FallbackEvent) => void } = {},
): Promise<{ driver: Driver; events: FallbackEvent[] }> {
  const opened: { label: string; driver: Driver }[] = [];
  const skipped: FallbackEvent[] = [];
  try {
    for (const [i, s] of stores.entries()) {
      const label = describeStoreUrl(s.url);
      try {
        opened.push({ label, driver: await openDriver(s.url, s.opts) });
      } catch (err) {
        if (i + 1 >= stores.length || !isOutage(err)) throw err;
        if (opened.length === 0) {
          const e = { from: label, to: describeStoreUrl(stores[i + 1]!.url), reason: (err as Error).message.split('\n')[0]! };
          skipped.push(e);
          o.onFallback?.(e);
        }
      }
    }
  } catch (err) {
    for (const d of opened) await d.driver.close().catch(() => {});
    throw err;
  }
  const fb = withFallback(opened, o.onFallback, skipped);
  return { driver: o.rateLimit ? withRateLimit(fb, o.rateLimit) : fb, events: fb.events };
}

/** `url` for messages and logs: passwords and token-like query parameters replaced by `***`. */
export function describeStoreUrl(url: string): string {
  if (!hasScheme(url)) return url;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return url.replace(/\/\/([^/@:]*):[^/@]*@/, '//$1:***@');
  }
  if (parsed.password) parsed.password = '***';
  // `https://<token>@host` carries the token as the user name.
  else if (parsed.username && (parsed.protocol === 'http:' || parsed.protocol === 'https:')) parsed.username = '***';
  for (const name of [...parsed.searchParams.keys()]) {
    if (/token|secret|passw|signature|credential|key|sig$/i.test(name)) parsed.searchParams.set(name, '***');
  }
  return parsed.toString();
}

// Two letters at least, so a Windows drive (`C:\store`) reads as a path.
function hasScheme(url: string): boolean {
  return /^[a-z][a-z0-9+.-]+:/i.test(url);
}

function parseStoreUrl(url: string, cwd: string): URL {
  if (url === '') throw new KkError('CONFIG_INVALID', 'the store location is empty');
  if (!hasScheme(url)) return pathToFileURL(path.resolve(cwd, url));
  try {
    return new URL(url);
  } catch (err) {
    throw new KkError('CONFIG_INVALID', `malformed store URL "${describeStoreUrl(url)}"`, { cause: err });
  }
}

registerDriver('file', (url) => {
  let root: string;
  try {
    root = fileURLToPath(url);
  } catch (err) {
    throw new KkError('CONFIG_INVALID', `bad file store URL "${url.href}": ${(err as Error).message}`, { cause: err });
  }
  return createFileDriver({ root });
});

// Loaded on first use: the AWS SDK costs ~250 ms to import, which every other command would pay.
registerDriver('s3', async (url) => {
  const { createS3Driver, s3DriverOptionsFromUrl } = await import('./s3.js');
  return createS3Driver(s3DriverOptionsFromUrl(url));
});

// The kk server; undici is loaded on first use, like the AWS SDK above.
for (const scheme of ['http', 'https']) {
  registerDriver(scheme, async (url, opts) => {
    const { openHttpDriver } = await import('./http.js');
    return openHttpDriver(opts.token ? { url: url.href, token: opts.token } : { url: url.href });
  });
}

// A store on a host reachable by ssh; the ssh client does the connecting, nothing is imported.
registerDriver('ssh', async (url) => {
  const { createSshDriver, sshDriverOptionsFromUrl } = await import('./ssh.js');
  return createSshDriver(sshDriverOptionsFromUrl(url));
});

// An OCI registry repository (docker://host[:port]/repo) and an OCI layout in one tar file
// (tar:///abs/file.tar): the same object graph, oci-store.ts.
registerDriver('docker', async (url) => {
  const { createDockerDriver, dockerDriverOptionsFromUrl } = await import('./docker.js');
  return createDockerDriver(dockerDriverOptionsFromUrl(url));
});

registerDriver('tar', async (url) => {
  const { createTarDriver, tarDriverOptionsFromUrl } = await import('./tar-store.js');
  return createTarDriver(tarDriverOptionsFromUrl(url));
});
