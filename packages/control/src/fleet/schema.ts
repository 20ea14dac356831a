// The fleet's tables as Kysely sees them (DESIGN 12, 13). Same conventions as ../schema.ts: times
// are ISO strings, `*_ms` columns epoch milliseconds for what claims and leases compare, JSON in
// TEXT, booleans as 0/1.
import type { Generated } from 'kysely';
import type { Database } from '../schema.js';

export interface NodesTable {
  id: string;
  name: string;
  kind: string;
  /** ssh: user@host[:port]; agent: what it reported (informational). */
  address: string | null;
  /** JSON object of string tags. */
  tags: string;
  status: string;
  status_reason: string;
  status_since: string;
  last_heartbeat_ms: number | null;
  /** JSON the agent sent with its last heartbeat (version, host, free disk...). */
  info: string | null;
  schedulable: number;
  drain_reason: string | null;
  created: string;
  updated: string;
}

export interface NodeStatusHistoryTable {
  n: Generated<number>;
  node: string;
  time: string;
  from_status: string | null;
  to_status: string;
  reason: string;
}

export interface RegistrationTokensTable {
  id: string;
  name: string;
  hash: string;
  created: string;
  expires: string | null;
  expires_ms: number | null;
  revoked: string | null;
  created_by: string;
  /** JSON object of tags every node enrolled with it gets. */
  tags: string;
  uses: number;
}

export interface NodeTokensTable {
  id: string;
  node: string;
  hash: string;
  created: string;
  revoked: string | null;
  /** The registration token it was minted with (null: by an admin). */
  registration: string | null;
}

export interface FleetProjectsTable {
  project: string;
  max_parallel_nodes: number;
  retry_max_attempts: number;
  retry_base_ms: number;
  retry_max_ms: number;
  /** `wait`: an offline node's tasks wait for it; `skip`: they are canceled with that reason. */
  offline_policy: string;
  /** Consecutive failed attempts on one target that make the project SYNC_DEGRADED. */
  degraded_after: number;
  sync_degraded: number;
  degraded_reason: string | null;
  degraded_since: string | null;
  updated: string;
}

export interface FleetSlotsTable {
  project: string;
  slot: number;
}

export interface TargetsTable {
  id: string;
  project: string;
  app: string;
  node: string;
  path: string;
  strategy: string;
  /** JSON arrays of gitignore-syntax patterns. */
  include: string;
  exclude: string;
  /** `promoted` | `latest` | `pinned`. */
  follows: string;
  /** The pinned version (only when follows = pinned). */
  pinned: string | null;
  on_local_change: string;
  /** `full` | `skip-existing` (migration 5). */
  mode: string;
  paused_reason: string | null;
  paused_by: string | null;
  paused_since: string | null;
  paused_until_ms: number | null;
  /** The version the node last applied successfully. */
  current_version: string | null;
  last_sync: string | null;
  last_status: string | null;
  consecutive_failures: number;
  created: string;
  updated: string;
}

export interface TasksTable {
  id: string;
  target: string;
  project: string;
  app: string;
  node: string;
  version: string;
  manifest: string | null;
  /** What made it: promote, push, manual, resume, retry. */
  source: string;
  state: string;
  attempts: number;
  max_attempts: number;
  next_attempt_ms: number | null;
  lease_expires_ms: number | null;
  attempt_id: string | null;
  slot: number | null;
  stage: string | null;
  progress: number | null;
  /** JSON: files added/changed/deleted, bytes fetched, seconds. */
  result: string | null;
  error_code: string | null;
  error_reason: string | null;
  log_count: number;
  log_dropped: number;
  created: string;
  created_ms: number;
  started: string | null;
  finished: string | null;
  updated: string;
  /** Version the target held when the task was created. */
  from_version: string | null;
}

export interface TaskLogsTable {
  task: string;
  n: number;
  time: string;
  level: string;
  line: string;
}

export interface SyncHistoryTable {
  n: Generated<number>;
  target: string;
  task: string;
  node: string;
  project: string;
  app: string;
  source: string;
  from_version: string | null;
  to_version: string;
  files_added: number | null;
  files_changed: number | null;
  files_deleted: number | null;
  bytes: number | null;
  duration_ms: number | null;
  status: string;
  error_code: string | null;
  error_reason: string | null;
  time: string;
}

export interface FleetTables {
  nodes: NodesTable;
  node_status_history: NodeStatusHistoryTable;
  registration_tokens: RegistrationTokensTable;
  node_tokens: NodeTokensTable;
  fleet_projects: FleetProjectsTable;
  fleet_slots: FleetSlotsTable;
  targets: TargetsTable;
  tasks: TasksTable;
  task_logs: TaskLogsTable;
  sync_history: SyncHistoryTable;
}

export type FleetDatabase = Database & FleetTables;
