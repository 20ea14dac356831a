// Versioned migrations. Each has a number, a name and an `up` that runs inside one transaction
// with the migration lock held (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so two
// instances starting at once apply each step exactly once. `kk_schema` records what ran.
// Migrations are append-only: never edit a released one, add the next number (nodes, targets,
// tasks and deploys come as 2, 3, ...). A database whose highest version is above the code's is
// refused (an older kk must not write a schema it does not understand).
import { KkError } from '@kk/core';
import { type Kysely, sql } from 'kysely';
import type { ControlDb, DialectName, Executor } from './db.js';
import { fleetMigration, fleetModeMigration } from './fleet/migration.js';
import { deploysClaimMigration, deploysMigration } from './deploys/migration.js';

export interface Migration {
  version: number;
  name: string;
  up(db: Kysely<any>, dialect: DialectName): Promise<void>;
}

/** An auto-incrementing 64-bit primary key in either dialect. */
function seqPk(dialect: DialectName) {
  return dialect === 'sqlite' ? sql`integer primary key autoincrement` : sql`bigint generated always as identity primary key`;
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'tokens, webhooks, events, deliveries, audit, uploads, leases',
    async up(db, d) {
      await db.schema
        .createTable('tokens')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .addColumn('scope', 'text', (c) => c.notNull())
        .addColumn('permissions', 'text', (c) => c.notNull())
        .addColumn('created', 'text', (c) => c.notNull())
        .addColumn('expires', 'text')
        .addColumn('revoked', 'text')
        .addColumn('created_by', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('tokens_created').on('tokens').columns(['created', 'id']).execute();

      await db.schema
        .createTable('webhooks')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('url', 'text', (c) => c.notNull())
        .addColumn('events', 'text', (c) => c.notNull())
        .addColumn('secret', 'text', (c) => c.notNull())
        .addColumn('project', 'text')
        .addColumn('app', 'text')
        .addColumn('active', 'integer', (c) => c.notNull().check(sql`active in (0, 1)`))
        .addColumn('source', 'text', (c) => c.notNull().check(sql`source in ('api', 'config')`))
        .addColumn('created', 'text', (c) => c.notNull())
        .addColumn('updated', 'text', (c) => c.notNull())
        .addCheckConstraint('webhooks_app_needs_project', sql`app is null or project is not null`)
        .execute();

      await db.schema
        .createTable('events')
        .addColumn('seq', sql`${seqPk(d)}` as never)
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('time', 'text', (c) => c.notNull())
        .addColumn('project', 'text')
        .addColumn('app', 'text')
        .addColumn('version', 'text')
        .addColumn('body', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('events_project').on('events').columns(['project', 'app', 'seq']).execute();

      await db.schema
        .createTable('deliveries')
        .addColumn('n', sql`${seqPk(d)}` as never)
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('webhook', 'text', (c) => c.notNull())
        .addColumn('event_seq', 'bigint')
        .addColumn('event_id', 'text', (c) => c.notNull())
        .addColumn('event', 'text', (c) => c.notNull())
        .addColumn('body', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('pending', 'delivered', 'failed')`))
        .addColumn('attempts', 'text', (c) => c.notNull())
        .addColumn('created', 'text', (c) => c.notNull())
        .addColumn('updated', 'text', (c) => c.notNull())
        .addColumn('next_attempt', 'text')
        .addColumn('due_ms', 'bigint')
        .addColumn('claim_owner', 'text')
        .addColumn('claim_until_ms', 'bigint')
        // The outbox is exactly the pending deliveries.
        .addCheckConstraint('deliveries_due_iff_pending', sql`(state = 'pending') = (due_ms is not null)`)
        .execute();
      await db.schema.createIndex('deliveries_webhook').on('deliveries').columns(['webhook', 'n']).execute();
      await db.schema.createIndex('deliveries_due').on('deliveries').column('due_ms').where(sql.ref('due_ms'), 'is not', null).execute();
      // One first delivery of an event per webhook (redeliveries carry no event_seq).
      await db.schema.createIndex('deliveries_event_once').on('deliveries').columns(['event_seq', 'webhook']).unique().where(sql.ref('event_seq'), 'is not', null).execute();

      await db.schema
        .createTable('audit')
        .addColumn('seq', sql`${seqPk(d)}` as never)
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('time', 'text', (c) => c.notNull())
        .addColumn('action', 'text', (c) => c.notNull())
        .addColumn('project', 'text')
        .addColumn('app', 'text')
        .addColumn('version', 'text')
        .addColumn('manifest', 'text')
        .addColumn('channel', 'text')
        .addColumn('token', 'text', (c) => c.notNull())
        .addColumn('agent', 'text')
        .addColumn('address', 'text')
        .addColumn('details', 'text')
        .execute();
      // Pages are ordered by (time, seq); each filter column leads an index whose next columns
      // are time and seq, so a filtered page with since/until is one index range, in order.
      await db.schema.createIndex('audit_time').on('audit').columns(['time', 'seq']).execute();
      await db.schema.createIndex('audit_project').on('audit').columns(['project', 'time', 'seq']).execute();
      await db.schema.createIndex('audit_project_app').on('audit').columns(['project', 'app', 'time', 'seq']).execute();
      for (const col of ['action', 'token', 'agent', 'version'] as const) {
        await db.schema.createIndex(`audit_${col}`).on('audit').columns([col, 'time', 'seq']).execute();
      }

      await db.schema
        .createTable('upload_sessions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('project', 'text', (c) => c.notNull())
        .addColumn('app', 'text', (c) => c.notNull())
        .addColumn('version', 'text', (c) => c.notNull())
        .addColumn('token', 'text', (c) => c.notNull())
        .addColumn('created', 'text', (c) => c.notNull())
        .addColumn('expires', 'text', (c) => c.notNull())
        .addColumn('expires_ms', 'bigint', (c) => c.notNull())
        .addColumn('builder', 'text')
        .addColumn('git_commit', 'text')
        .addColumn('meta', 'text')
        .addColumn('declared', 'text', (c) => c.notNull())
        // What the finish produced (JSON), once the version exists: a retried finish answers it.
        .addColumn('finished', 'text')
        .addColumn('finished_ms', 'bigint')
        // One session per version: two uploads of one version share it.
        .addUniqueConstraint('upload_sessions_version', ['project', 'app', 'version'])
        .execute();
      await db.schema
        .createTable('upload_files')
        .addColumn('session', 'text', (c) => c.notNull().references('upload_sessions.id').onDelete('cascade'))
        .addColumn('path', 'text', (c) => c.notNull())
        .addColumn('entry', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('upload_files_pk', ['session', 'path'])
        .execute();

      await db.schema
        .createTable('leases')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('owner', 'text', (c) => c.notNull())
        .addColumn('expires_ms', 'bigint', (c) => c.notNull())
        .addColumn('acquired', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('job_runs')
        .addColumn('job', 'text', (c) => c.notNull())
        .addColumn('slot', 'text', (c) => c.notNull())
        .addColumn('owner', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('running', 'done', 'failed')`))
        .addColumn('lease_until_ms', 'bigint', (c) => c.notNull())
        .addColumn('started', 'text', (c) => c.notNull())
        .addColumn('finished', 'text')
        .addColumn('attempts', 'integer', (c) => c.notNull())
        .addPrimaryKeyConstraint('job_runs_pk', ['job', 'slot'])
        .execute();
      await db.schema
        .createTable('settings')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .addColumn('updated', 'text', (c) => c.notNull())
        .execute();
    },
  },
  fleetMigration(2),
  deploysMigration(3),
  deploysClaimMigration(4),
  fleetModeMigration(5),
  {
    version: 6,
    name: 'tokens: last used',
    async up(db) {
      await sql.raw('alter table tokens add column last_used text').execute(db);
    },
  },
];

/** The highest schema version this code knows. */
export const SCHEMA_VERSION = Math.max(...MIGRATIONS.map((m) => m.version));

const MIGRATION_LOCK = 0x6b6b_0001; // pg advisory lock key ("kk" 1)

export interface MigrateResult {
  from: number;
  to: number;
  applied: { version: number; name: string }[];
}

/**
 * Bring the schema up to date. Idempotent; safe when several instances start at once.
 * STORE_INVALID when the database is newer than `migrations` know.
 */
export async function migrate(cdb: ControlDb, migrations: Migration[] = MIGRATIONS): Promise<MigrateResult> {
  const known = Math.max(0, ...migrations.map((m) => m.version));
  await cdb.db.schema
    .createTable('kk_schema')
    .ifNotExists()
    .addColumn('version', 'integer', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('applied', 'text', (c) => c.notNull())
    .execute()
    .catch(async (err) => {
      // Two PostgreSQL instances racing on CREATE TABLE IF NOT EXISTS: one may lose on the catalog.
      if (cdb.dialect !== 'postgres' || !(await tableExists(cdb))) throw err;
    });
  return cdb.writeTx(async (tx) => {
    if (cdb.dialect === 'postgres') await sql`select pg_advisory_xact_lock(${MIGRATION_LOCK})`.execute(tx);
    const from = await currentVersion(tx);
    if (from > known) {
      throw new KkError('STORE_INVALID', `the control database ${cdb.display} has schema version ${from}, newer than this kk knows (${known}); refusing to start`, {
        hint: 'run the kk release that wrote this database (or newer)',
        details: { schema: from, known },
      });
    }
    const applied: MigrateResult['applied'] = [];
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (m.version <= from) continue;
      await m.up(tx as Kysely<any>, cdb.dialect);
      await tx.insertInto('kk_schema').values({ version: m.version, name: m.name, applied: new Date().toISOString() }).execute();
      applied.push({ version: m.version, name: m.name });
    }
    return { from, to: Math.max(from, known), applied };
  });
}

export async function currentVersion(ex: Executor): Promise<number> {
  const row = await ex.selectFrom('kk_schema').select((eb) => eb.fn.max('version').as('v')).executeTakeFirst();
  return Number(row?.v ?? 0);
}

async function tableExists(cdb: ControlDb): Promise<boolean> {
  const r = await sql<{ t: string | null }>`select to_regclass('kk_schema')::text as t`.execute(cdb.db);
  return !!r.rows[0]?.t;
}
