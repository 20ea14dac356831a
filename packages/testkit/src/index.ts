// @kk/testkit: the shared driver conformance suite for vitest.
export { runDriverConformance, type DriverUnderTest } from './conformance.js';
export { startS3rver, s3rverUnavailable, type S3rverBackend, type S3rverDriverOptions, type S3rverOptions } from './backends/s3rver.js';
export { startSshd, sshdUnavailable, type SshdBackend, type SshdOptions } from './backends/sshd.js';
export { postgresBinDir, postgresUnavailable, startPostgres, type PostgresBackend, type PostgresOptions } from './backends/postgres.js';
export { podmanUnavailable, startPodman, type PodmanBackend, type PodmanOptions } from './backends/podman.js';
export { registryUnavailable, startRegistry, type RegistryBackend, type RegistryOptions } from './backends/registry.js';
export { startTokenServer, type TokenServer, type TokenServerOptions } from './backends/token-server.js';
