// The deploy center's data (seed 003, deploy-01..07): statuses, progress ranges, and the shapes a
// deploy reports (DeployStatusReport), calls back with (DeployCallbackPayload), and records for its
// health checks (HealthCheckResult) and rollbacks (RollbackResult). The names are the API's.

import type { DeployStatus, DeployType } from '@kk/core';

export { DEPLOY_STATUSES, type DeployStatus, type DeployType } from '@kk/core';

/** Statuses a deploy ends in (failed and timeout may still be followed by a rollback). */
export const TERMINAL_STATUSES: readonly DeployStatus[] = ['success', 'failed', 'timeout', 'rolled_back', 'rollback_failed'];
export function isTerminal(s: DeployStatus): boolean {
  return TERMINAL_STATUSES.includes(s);
}

export type CommandType = 'deploy.kk' | 'deploy.shell' | 'deploy.tar' | 'deploy.docker' | 'deploy.rollback';

/** The seed's progress ranges: tar upload 0-30, extract 30-60, install 60-90, health 90-100. */
export const PROGRESS = {
  pending: 0,
  executing: 5,
  script_running: 30,
  uploading: [0, 30],
  extracting: [30, 60],
  installing: [60, 90],
  pulling: [10, 50],
  stopping: 60,
  starting: 70,
  health_check: 90,
  done: 100,
} as const;

export interface HealthCheckSpec {
  type: 'http' | 'tcp' | 'script';
  /** http/tcp: default 127.0.0.1. */
  host?: string;
  port?: number;
  /** http: default `/`. */
  path?: string;
  /** script: shell content; healthy when it exits 0. */
  script?: string;
  /** Retries after the first probe. Default 3. */
  retries?: number;
  /** Pause between probes. Default 10 s. */
  interval_ms?: number;
  /** One probe's limit. Default 5 s. */
  timeout_ms?: number;
  /** All probes together. Default 60 s. */
  deadline_ms?: number;
}

export interface HealthCheckResult {
  success: boolean;
  check_type: HealthCheckSpec['type'];
  /** Milliseconds of the last probe. */
  response_time: number;
  /** Probes after the first. */
  retry_count: number;
  status_code?: number;
  error?: string;
  timestamp: string;
}

export interface RollbackResult {
  success: boolean;
  /** Milliseconds. */
  duration: number;
  /** What was put back (a version, a container, a tree). */
  to?: string;
  error?: string;
  health_check?: HealthCheckResult;
  timestamp: string;
}

export interface DeployStatusReport {
  deploy_id: string;
  command_type: CommandType;
  status: DeployStatus;
  progress: number;
  stage: string;
  message: string;
  /** Log lines since the previous report. */
  logs: string[];
  timestamp: string;
}

export interface DeployCallbackPayload {
  /** The deploy's id (CallbackID = deploy_id). */
  callback_id: string;
  command_type: CommandType;
  deploy_type: DeployType;
  status: DeployStatus;
  success: boolean;
  result: Record<string, unknown>;
  error: string;
  /** Milliseconds from start to the final status. */
  duration: number;
  timestamp: string;
}

export interface StatusEntry {
  status: DeployStatus;
  progress: number;
  message: string;
  time: string;
}

interface Common {
  /** Whole work phase (before the health check). Default 10 min. */
  timeout_ms?: number;
  health?: HealthCheckSpec;
  /** Roll back automatically on failure (default true). */
  rollback?: boolean;
  /** Optional script run after the apply / before and after (kk hooks). */
  env?: Record<string, string>;
}

export interface ShellSpec extends Common {
  type: 'shell';
  script: string;
  workdir?: string;
  rollback_script?: string;
}

export interface KkSpec extends Common {
  type: 'kk';
  project: string;
  app: string;
  version: string;
  path: string;
  pre?: string;
  post?: string;
}

export interface TarSpec extends Common {
  type: 'tar';
  /** The .tar.gz on this node; or `upload`. */
  file?: string;
  /** The digest of an upload through the store (upload.ts): fetched, checked, then deployed. */
  upload?: string;
  /** Its sha256 (hex); checked before anything is extracted. */
  sha256?: string;
  path: string;
  install_script?: string;
}

export interface DockerPort {
  container: number;
  host: number;
  protocol?: 'tcp' | 'udp';
  host_ip?: string;
}

export interface DockerSpec extends Common {
  type: 'docker';
  image: string;
  name: string;
  ports?: DockerPort[];
  /** Environment of the container (not of the agent). */
  container_env?: Record<string, string>;
  /** `host:container[:ro]` binds. */
  volumes?: string[];
  restart?: 'no' | 'always' | 'unless-stopped' | 'on-failure';
  cmd?: string[];
  /** Seconds the old container gets to stop before it is killed. Default 10. */
  stop_timeout?: number;
  /** Network mode (`host` to share the node's network). */
  network?: string;
  /** Allow pulling from a plain-HTTP registry (tests). */
  insecure?: boolean;
}

export type DeploySpec = ShellSpec | KkSpec | TarSpec | DockerSpec;

export const MAX_SCRIPT_BYTES = 100 * 1024;
