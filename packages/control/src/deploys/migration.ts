// The deploys' schema (DESIGN 14, seed 003): deploy records with their status history and
// bounded logs, and the versions marked bad per target. The rules that must hold under
// concurrency are constraints:
// - one ACTIVE deploy per node            (deploys_one_active_per_node, a unique partial index)
// - one deploy per Idempotency-Key and caller (deploys_idempotency, unique partial)
// - a finished status is never active     (deploys_active_not_finished, a CHECK)
import { type Kysely, sql } from 'kysely';
import type { DialectName } from '../db.js';
import type { Migration } from '../migrations.js';
import { DEPLOY_STATUSES } from './machine.js';

const statements = (d: DialectName): string[] => {
  const seqPk = d === 'sqlite' ? 'integer primary key autoincrement' : 'bigint generated always as identity primary key';
  const statuses = DEPLOY_STATUSES.map((s) => `'${s}'`).join(', ');
  return [
    `create table deploys (
      id text primary key,
      node text not null references nodes (id) on delete cascade,
      target text not null,
      deploy_type text not null check (deploy_type in ('kk', 'shell', 'tar', 'docker')),
      command_type text not null check (command_type in ('deploy.kk', 'deploy.shell', 'deploy.tar', 'deploy.docker', 'deploy.rollback')),
      status text not null check (status in (${statuses})),
      active integer not null check (active in (0, 1)),
      progress integer not null check (progress between 0 and 100),
      stage text not null,
      message text not null,
      spec text not null,
      version text,
      rollback_of text references deploys (id),
      result text,
      error text,
      error_code text,
      callback_url text,
      idempotency_key text,
      request_hash text not null,
      created_by text not null,
      created text not null,
      updated text not null,
      finished text,
      deadline_ms bigint not null,
      constraint deploys_active_not_finished check (active = 0 or status not in ('success', 'rolled_back', 'rollback_failed'))
    )`,
    `create unique index deploys_one_active_per_node on deploys (node) where active = 1`,
    `create unique index deploys_idempotency on deploys (created_by, idempotency_key) where idempotency_key is not null`,
    `create index deploys_node on deploys (node, id)`,
    `create index deploys_active_deadline on deploys (deadline_ms) where active = 1`,
    `create table deploy_status_history (
      n ${seqPk},
      deploy text not null references deploys (id) on delete cascade,
      time text not null,
      from_status text,
      to_status text not null,
      progress integer not null,
      message text not null
    )`,
    `create index deploy_status_history_deploy on deploy_status_history (deploy, n)`,
    `create table deploy_logs (
      n ${seqPk},
      deploy text not null references deploys (id) on delete cascade,
      time text not null,
      line text not null
    )`,
    `create index deploy_logs_deploy on deploy_logs (deploy, n)`,
    `create table deploy_bad_versions (
      target text not null,
      version text not null,
      deploy text not null,
      reason text not null,
      marked text not null,
      primary key (target, version)
    )`,
  ];
};

export const DEPLOYS_MIGRATION_NAME = 'deploys: records, status history, logs, bad versions per target';

/** The deploys' migration, numbered by the MIGRATIONS list that includes it. */
export function deploysMigration(version: number): Migration {
  return {
    version,
    name: DEPLOYS_MIGRATION_NAME,
    async up(db: Kysely<any>, d: DialectName) {
      for (const s of statements(d)) await sql.raw(s).execute(db);
    },
  };
}

const claimStatements = (): string[] => [
  // Which agent attempt owns a deploy: set when the node's agent claims it; every report names it.
  `alter table deploys add column attempt_id text`,
  `alter table deploys add column claimed_ms bigint`,
  // The docker monitor (seed deploy-26..28): the last report per container the node's agent deployed.
  `create table docker_monitor (
    node text not null references nodes (id) on delete cascade,
    name text not null,
    report text not null,
    time text not null,
    primary key (node, name)
  )`,
];

export const DEPLOYS_CLAIM_MIGRATION_NAME = 'deploys: claim attempts, docker monitor';

/** Claims fenced by attempt id, and the docker monitor's last reports. */
export function deploysClaimMigration(version: number): Migration {
  return {
    version,
    name: DEPLOYS_CLAIM_MIGRATION_NAME,
    async up(db: Kysely<any>) {
      for (const s of claimStatements()) await sql.raw(s).execute(db);
    },
  };
}
