// The deploy kinds, each a module testable without a server, and the runner that takes a deploy
// through its statuses, health check and automatic rollback, journalled on the node.
import { DockerKind, type DockerKindEnv } from './docker.js';
import { KkKind, type KkKindEnv } from './kk.js';
import type { KindFactory } from './runner.js';
import { ShellKind } from './shell.js';
import { TarKind, type TarKindEnv } from './tar.js';

export * from './types.js';
export { Deployer, commandType, MAX_LOG_LINES, type AppliedResult, type DeployKind, type DeployerOptions, type KindContext, type KindFactory } from './runner.js';
export { DeployJournal, placeOf, type JournalEntry } from './journal.js';
export { HEALTH_DEFAULTS, checkHealthSpec, healthCheck } from './health.js';
export { MAX_CAPTURE, checkScript, runScript, type ScriptResult } from './script.js';
export { ShellKind } from './shell.js';
export { KkKind, type KkKindEnv } from './kk.js';
export { TarKind, readTarGz, validateTarGz, type TarEntry, type TarKindEnv } from './tar.js';
export { UPLOAD_FORMAT, fetchUpload, readUploadList, uploadFile, type UploadList, type UploadResult } from './upload.js';
export { DockerEngine, DockerKind, createBody, socketPathOf, type DockerKindEnv } from './docker.js';

/** The kinds a node runs: kk needs a store, docker an engine. */
export function defaultKinds(env: { kk?: KkKindEnv; docker?: DockerKindEnv; tar?: TarKindEnv } = {}): KindFactory {
  return (spec) => {
    switch (spec.type) {
      case 'shell':
        return new ShellKind(spec);
      case 'tar':
        return new TarKind(spec, env.tar ?? (env.kk ? { store: env.kk.store } : {}));
      case 'docker':
        return new DockerKind(spec, env.docker);
      case 'kk':
        if (!env.kk) throw new TypeError('a kk deploy needs a store (defaultKinds({ kk }))');
        return new KkKind(spec, env.kk);
    }
  };
}
export { monitorContainers, type ContainerReport } from './monitor.js';
