// The deploys' tables as Kysely sees them (same conventions as ../schema.ts).
import type { Generated } from 'kysely';
import type { Database } from '../schema.js';

export interface DeploysTable {
  /** `dep-<time>-<random>`: sorts by creation (the list's cursor). */
  id: string;
  node: string;
  /** Where it lands on the node (`kk:/srv/app`, `docker:web`): what a bad version is marked for. */
  target: string;
  deploy_type: string;
  command_type: string;
  status: string;
  active: number;
  progress: number;
  stage: string;
  message: string;
  /** JSON of the deploy's spec as the agent runs it. */
  spec: string;
  version: string | null;
  rollback_of: string | null;
  /** JSON of the final DeployCallbackPayload's result. */
  result: string | null;
  error: string | null;
  error_code: string | null;
  callback_url: string | null;
  idempotency_key: string | null;
  request_hash: string;
  created_by: string;
  created: string;
  updated: string;
  finished: string | null;
  deadline_ms: number;
  /** The agent attempt that claimed it (every report must name it). Migration 4. */
  attempt_id: string | null;
  claimed_ms: number | null;
}

export interface DeployStatusHistoryTable {
  n: Generated<number>;
  deploy: string;
  time: string;
  from_status: string | null;
  to_status: string;
  progress: number;
  message: string;
}

export interface DeployLogsTable {
  n: Generated<number>;
  deploy: string;
  time: string;
  line: string;
}

export interface DeployBadVersionsTable {
  target: string;
  version: string;
  deploy: string;
  reason: string;
  marked: string;
}

export interface DockerMonitorTable {
  node: string;
  name: string;
  /** JSON of the agent's ContainerReport. */
  report: string;
  time: string;
}

export interface DeploysDatabase extends Database {
  docker_monitor: DockerMonitorTable;
  deploys: DeploysTable;
  deploy_status_history: DeployStatusHistoryTable;
  deploy_logs: DeployLogsTable;
  deploy_bad_versions: DeployBadVersionsTable;
  nodes: { id: string; name: string };
}
