import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isKkError } from '@kk/core';
import { registryUnavailable, runDriverConformance, startRegistry, startTokenServer } from '@kk/testkit';
import type { RegistryBackend } from '@kk/testkit';
import { createDockerDriver, dockerDriverOptionsFromUrl } from '../src/docker.js';

const unavailable = registryUnavailable();
if (unavailable && process.env.CI) throw new Error(`CI must run the docker driver tests: ${unavailable}`);

describe.skipIf(!!unavailable)(`docker driver against the distribution registry${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  runDriverConformance('docker (registry, DELETE refused: tombstones)', async () => {
    const reg = await startRegistry();
    return { driver: createDockerDriver({ host: reg.host, repository: 'kk/conformance', insecure: true }), cleanup: () => reg.stop() };
  });

  runDriverConformance('docker (registry with token auth and DELETE enabled)', async () => {
    const tokens = await startTokenServer({ users: { kk: 'secret' } });
    const reg = await startRegistry({ deleteEnabled: true, tokenAuth: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.certFile } });
    const driver = createDockerDriver({ host: reg.host, repository: 'kk/conformance', insecure: true, credentials: { username: 'kk', password: 'secret' } });
    return {
      driver,
      cleanup: async () => {
        await reg.stop();
        await tokens.stop();
      },
    };
  });
});
