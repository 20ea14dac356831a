// docker://host[:port]/repository: a kk store in one repository of any OCI distribution
// registry (registry:2/distribution, Harbor, ECR, GHCR, Docker Hub), through its HTTP API with
// no kk server. The key mapping is oci-store.ts's; this file parses the URL and opens the client.
import { KkError } from '@kk/core';
import type { PruneDriver } from '@kk/core';
import { createOciStore } from './oci-store.js';
import { RegistryClient, type RegistryClientOptions } from './registry-client.js';

export interface DockerDriverOptions extends RegistryClientOptions {
  /** Concurrent registry requests inside one driver call (listing, sizes). Default 8. */
  concurrency?: number;
}

export function createDockerDriver(opts: DockerDriverOptions): PruneDriver & { readonly client: RegistryClient } {
  const client = new RegistryClient(opts);
  const driver = createOciStore({ name: 'docker', backend: client, ...(opts.concurrency ? { concurrency: opts.concurrency } : {}) });
  return Object.assign(driver, { client });
}

/** `docker://[user:password@]host[:port]/repository[?insecure=true]` to driver options. */
export function dockerDriverOptionsFromUrl(url: URL): DockerDriverOptions {
  const bad = (why: string) => new KkError('CONFIG_INVALID', `bad docker store URL: ${why}`, { hint: 'use docker://registry.example:5000/team/kk-store (add ?insecure=true for plain http)' });
  if (!url.host) throw bad('it names no registry');
  const repository = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, '');
  if (!repository) throw bad('it names no repository');
  const opts: DockerDriverOptions = { host: url.host, repository };
  if (url.username) opts.credentials = { username: decodeURIComponent(url.username), password: decodeURIComponent(url.password) };
  for (const [name, value] of url.searchParams) {
    if (name === 'insecure') {
      if (/^(true|1|yes)$/i.test(value)) opts.insecure = true;
      else if (!/^(false|0|no)$/i.test(value)) throw bad(`insecure must be true or false, got "${value}"`);
    } else {
      throw bad(`unknown parameter "${name}"`);
    }
  }
  return opts;
}
