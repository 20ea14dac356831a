// The fleet's schema (DESIGN 12, 13): nodes, their tokens and status history, targets, tasks with
// their logs, sync history, per-project settings and run slots. The rules that must hold under
// concurrency are constraints here, not checks in code:
// - one RUNNING task per node            (tasks_one_running_per_node, a unique partial index)
// - one PENDING/RETRYING task per target (tasks_one_queued_per_target: latest wins by replacing)
// - at most max_parallel_nodes RUNNING tasks per project: a running task holds a row of
//   fleet_slots (composite foreign key) and no two running tasks hold the same one
//   (tasks_one_per_slot); a project has exactly max_parallel_nodes slot rows
// - one directory per node belongs to one target (targets_node_path, unique)
// - a task is RUNNING exactly when it holds a slot and a lease (CHECKs)
import { type Kysely, sql } from 'kysely';
import type { DialectName } from '../db.js';
import type { Migration } from '../migrations.js';

const statements = (d: DialectName): string[] => {
  const seqPk = d === 'sqlite' ? 'integer primary key autoincrement' : 'bigint generated always as identity primary key';
  return [
    `create table nodes (
      id text primary key,
      name text not null unique,
      kind text not null check (kind in ('agent', 'ssh')),
      address text,
      tags text not null,
      status text not null check (status in ('ONLINE', 'DEGRADED', 'OFFLINE')),
      status_reason text not null,
      status_since text not null,
      last_heartbeat_ms bigint,
      info text,
      schedulable integer not null check (schedulable in (0, 1)),
      drain_reason text,
      created text not null,
      updated text not null
    )`,
    `create table node_status_history (
      n ${seqPk},
      node text not null references nodes (id) on delete cascade,
      time text not null,
      from_status text,
      to_status text not null,
      reason text not null
    )`,
    `create index node_status_history_node on node_status_history (node, n)`,
    `create table registration_tokens (
      id text primary key,
      name text not null,
      hash text not null,
      created text not null,
      expires text,
      expires_ms bigint,
      revoked text,
      created_by text not null,
      tags text not null,
      uses integer not null
    )`,
    `create table node_tokens (
      id text primary key,
      node text not null references nodes (id) on delete cascade,
      hash text not null,
      created text not null,
      revoked text,
      registration text
    )`,
    // One live token per node: enrolling again or rotating revokes the old one first.
    `create unique index node_tokens_one_live on node_tokens (node) where revoked is null`,
    `create table fleet_projects (
      project text primary key,
      max_parallel_nodes integer not null check (max_parallel_nodes between 1 and 1000),
      retry_max_attempts integer not null check (retry_max_attempts between 1 and 100),
      retry_base_ms bigint not null check (retry_base_ms >= 0),
      retry_max_ms bigint not null check (retry_max_ms >= retry_base_ms),
      offline_policy text not null check (offline_policy in ('wait', 'skip')),
      degraded_after integer not null check (degraded_after >= 1),
      sync_degraded integer not null check (sync_degraded in (0, 1)),
      degraded_reason text,
      degraded_since text,
      updated text not null,
      check ((sync_degraded = 1) = (degraded_reason is not null))
    )`,
    `create table fleet_slots (
      project text not null references fleet_projects (project) on delete cascade,
      slot integer not null check (slot >= 0),
      primary key (project, slot)
    )`,
    `create table targets (
      id text primary key,
      project text not null references fleet_projects (project),
      app text not null,
      node text not null references nodes (id),
      path text not null,
      strategy text not null check (strategy in ('mirror', 'overlay')),
      include text not null,
      exclude text not null,
      follows text not null check (follows in ('promoted', 'latest', 'pinned')),
      pinned text,
      on_local_change text not null check (on_local_change in ('overwrite', 'fail')),
      paused_reason text,
      paused_by text,
      paused_since text,
      paused_until_ms bigint,
      current_version text,
      last_sync text,
      last_status text,
      consecutive_failures integer not null,
      created text not null,
      updated text not null,
      check ((follows = 'pinned') = (pinned is not null)),
      check ((paused_reason is null) = (paused_since is null)),
      check (paused_reason is not null or paused_until_ms is null)
    )`,
    `create unique index targets_node_path on targets (node, path)`,
    `create index targets_project on targets (project, app)`,
    `create table tasks (
      id text primary key,
      target text not null references targets (id) on delete cascade,
      project text not null,
      app text not null,
      node text not null,
      version text not null,
      manifest text,
      source text not null,
      state text not null check (state in ('PENDING', 'RUNNING', 'RETRYING', 'SUCCESS', 'FAILED', 'CANCELED')),
      attempts integer not null check (attempts >= 0),
      max_attempts integer not null check (max_attempts >= 1),
      next_attempt_ms bigint,
      lease_expires_ms bigint,
      attempt_id text,
      slot integer,
      stage text,
      progress double precision,
      result text,
      error_code text,
      error_reason text,
      log_count integer not null,
      log_dropped integer not null,
      created text not null,
      created_ms bigint not null,
      started text,
      finished text,
      updated text not null,
      from_version text,
      foreign key (project, slot) references fleet_slots (project, slot),
      check ((state = 'RUNNING') = (slot is not null)),
      check ((state = 'RUNNING') = (lease_expires_ms is not null)),
      check (state <> 'RUNNING' or attempt_id is not null),
      check ((state in ('PENDING', 'RETRYING')) = (next_attempt_ms is not null)),
      check (state not in ('FAILED', 'CANCELED') or error_code is not null)
    )`,
    `create unique index tasks_one_running_per_node on tasks (node) where state = 'RUNNING'`,
    `create unique index tasks_one_queued_per_target on tasks (target) where state in ('PENDING', 'RETRYING')`,
    `create unique index tasks_one_per_slot on tasks (project, slot) where state = 'RUNNING'`,
    `create index tasks_node_due on tasks (node, next_attempt_ms) where next_attempt_ms is not null`,
    `create index tasks_lease on tasks (lease_expires_ms) where lease_expires_ms is not null`,
    `create index tasks_created on tasks (created_ms, id)`,
    `create index tasks_target on tasks (target, created_ms)`,
    `create table task_logs (
      task text not null references tasks (id) on delete cascade,
      n integer not null,
      time text not null,
      level text not null,
      line text not null,
      primary key (task, n)
    )`,
    `create table sync_history (
      n ${seqPk},
      target text not null references targets (id) on delete cascade,
      task text not null,
      node text not null,
      project text not null,
      app text not null,
      source text not null,
      from_version text,
      to_version text not null,
      files_added integer,
      files_changed integer,
      files_deleted integer,
      bytes bigint,
      duration_ms bigint,
      status text not null,
      error_code text,
      error_reason text,
      time text not null
    )`,
    `create index sync_history_target on sync_history (target, n)`,
  ];
};

export const FLEET_MIGRATION_NAME = 'fleet: nodes, node tokens, targets, tasks, slots, logs, sync history';

/** The fleet's migration, numbered by the MIGRATIONS list that includes it. */
export function fleetMigration(version: number): Migration {
  return {
    version,
    name: FLEET_MIGRATION_NAME,
    async up(db: Kysely<any>, d: DialectName) {
      for (const s of statements(d)) await sql.raw(s).execute(db);
    },
  };
}

export const FLEET_MODE_MIGRATION_NAME = 'fleet: target sync mode';

/** A target's sync mode (seed 004): `full` (what every target did before) or `skip-existing`. */
export function fleetModeMigration(version: number): Migration {
  return {
    version,
    name: FLEET_MODE_MIGRATION_NAME,
    async up(db: Kysely<any>) {
      await sql.raw(`alter table targets add column mode text not null default 'full' check (mode in ('full', 'skip-existing'))`).execute(db);
    },
  };
}
