// Opening the control database: `sqlite:///abs/path/kk.db` (better-sqlite3, the embedded default)
// or `postgres://user:pass@host:port/db` (pg, what several server instances share), behind one
// Kysely instance. The one dialect difference the repositories see is `writeTx`: SQLite takes the
// write lock up front with BEGIN IMMEDIATE (so two processes on one file never deadlock on a lock
// upgrade); PostgreSQL runs a plain READ COMMITTED transaction and claims rows with
// FOR UPDATE SKIP LOCKED (see `skipLocked`).
import { mkdirSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { KkError } from '@kk/core';
import { Kysely, PostgresDialect, SqliteDialect, type Transaction, sql } from 'kysely';
import type { Database } from './schema.js';

export type DialectName = 'sqlite' | 'postgres';

/** What every repository method runs its queries on: the database or a transaction. */
export type Executor = Kysely<Database> | Transaction<Database>;

export interface ControlDbTarget {
  dialect: DialectName;
  /** SQLite: the file path (or `:memory:`). */
  path?: string;
  /** PostgreSQL: the connection string. */
  connectionString?: string;
  /** The URL with any password replaced by `***`, for logs and errors. */
  display: string;
}

/**
 * Parse a control database URL. `sqlite:///abs/path`, `sqlite:relative/path` (against `cwd`),
 * `sqlite::memory:`, `postgres://` or `postgresql://`. CONFIG_INVALID for anything else.
 */
export function parseDbUrl(url: string, cwd = process.cwd()): ControlDbTarget {
  const bad = (why: string) =>
    new KkError('CONFIG_INVALID', `control database URL ${JSON.stringify(redact(url))}: ${why}`, {
      hint: 'use sqlite:///path/to/kk.db or postgres://user:password@host:5432/dbname',
    });
  if (typeof url !== 'string' || url.trim() === '') throw bad('empty');
  if (/^sqlite:/i.test(url)) {
    let rest = url.slice('sqlite:'.length);
    if (rest === ':memory:') return { dialect: 'sqlite', path: ':memory:', display: url };
    if (rest.startsWith('//')) {
      rest = rest.slice(2);
      // sqlite:///abs -> "/abs"; sqlite://host/... names a host, which a file cannot have.
      if (!rest.startsWith('/')) throw bad('a sqlite URL has no host: use sqlite:///absolute/path or sqlite:relative/path');
    }
    rest = decodeURIComponent(rest.split('?')[0]!);
    if (rest === '' || rest.endsWith('/')) throw bad('no database file named');
    return { dialect: 'sqlite', path: isAbsolute(rest) ? rest : resolve(cwd, rest), display: url };
  }
  if (/^postgres(ql)?:\/\//i.test(url)) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw bad('not a valid URL');
    }
    if (!u.hostname) throw bad('no host');
    if (u.port && !(Number(u.port) > 0 && Number(u.port) < 65536)) throw bad('bad port');
    if (u.pathname.replace(/^\//, '') === '') throw bad('no database name (postgres://user:password@host:5432/dbname)');
    return { dialect: 'postgres', connectionString: url, display: redact(url) };
  }
  throw bad('unknown scheme (sqlite: or postgres:)');
}

function redact(url: string): string {
  return String(url).replace(/^([a-z]+:\/\/[^:/@]*:)[^@/]*@/i, '$1***@');
}

export interface OpenOptions {
  /** Relative sqlite paths resolve against this. */
  cwd?: string;
  /** PostgreSQL pool size (default 10). */
  poolSize?: number;
  /** How long to wait to connect before BACKEND (default 5 s). */
  connectTimeoutMs?: number;
}

const SQLITE_SHARED = new Map<string, { db: Kysely<Database>; refs: number }>();

export class ControlDb {
  private closed = false;

  private constructor(
    readonly db: Kysely<Database>,
    readonly dialect: DialectName,
    readonly display: string,
    private readonly sharedKey?: string,
  ) {}

  /** Open (and for SQLite create) the database; BACKEND if it cannot be reached. Does not migrate. */
  static async open(url: string, opts: OpenOptions = {}): Promise<ControlDb> {
    const target = parseDbUrl(url, opts.cwd);
    if (target.dialect === 'sqlite') {
      // One connection per file per process: better-sqlite3 waits for a lock synchronously, so
      // two connections of one process contending for a file would block the very event loop
      // the lock holder needs to finish. Kysely's connection mutex queues them instead.
      const { default: Sqlite } = await import('better-sqlite3');
      const key = target.path === ':memory:' ? undefined : target.path!;
      const shared = key ? SQLITE_SHARED.get(key) : undefined;
      if (shared) {
        shared.refs++;
        return new ControlDb(shared.db, 'sqlite', target.display, key);
      }
      let handle: import('better-sqlite3').Database;
      try {
        if (key) mkdirSync(dirname(key), { recursive: true });
        handle = new Sqlite(target.path!, { timeout: 15_000 });
        handle.pragma('journal_mode = WAL');
        handle.pragma('synchronous = FULL');
        handle.pragma('foreign_keys = ON');
      } catch (err) {
        throw new KkError('BACKEND', `cannot open the control database ${target.display}: ${(err as Error).message}`, {
          cause: err,
          hint: 'check that the directory exists and is writable',
        });
      }
      const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: handle }) });
      if (key) SQLITE_SHARED.set(key, { db, refs: 1 });
      return new ControlDb(db, 'sqlite', target.display, key);
    }
    const pg = (await import('pg')).default;
    const pool = new pg.Pool({
      connectionString: target.connectionString,
      max: opts.poolSize ?? 10,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
      // int8 (counts, epoch ms) as numbers: every value we keep fits in 2^53.
      types: { getTypeParser: ((oid: number, format?: string) => (oid === 20 ? Number : pg.types.getTypeParser(oid, format as 'text'))) as never },
    });
    pool.on('error', () => {}); // an idle client dropped by the server: the pool replaces it
    try {
      const c = await pool.connect();
      c.release();
    } catch (err) {
      await pool.end().catch(() => {});
      throw new KkError('BACKEND', `cannot reach the control database ${target.display}: ${(err as Error).message}`, {
        cause: err,
        hint: 'check that PostgreSQL is running and the URL, user and password are right',
      });
    }
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return new ControlDb(db, 'postgres', target.display);
  }

  /**
   * Run `fn` in a write transaction. SQLite: BEGIN IMMEDIATE on the one connection (writers
   * queue; readers never block). PostgreSQL: a transaction from the pool.
   */
  async writeTx<T>(fn: (tx: Executor) => Promise<T>): Promise<T> {
    if (this.dialect === 'postgres') return this.db.transaction().execute((tx) => fn(tx));
    return this.db.connection().execute(async (conn) => {
      await sql`begin immediate`.execute(conn);
      try {
        const out = await fn(conn);
        await sql`commit`.execute(conn);
        return out;
      } catch (err) {
        await sql`rollback`.execute(conn).catch(() => {});
        throw err;
      }
    });
  }

  /** `FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's BEGIN IMMEDIATE already excludes other writers. */
  get skipLocked(): boolean {
    return this.dialect === 'postgres';
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.sharedKey) {
      const shared = SQLITE_SHARED.get(this.sharedKey);
      if (shared && --shared.refs > 0) return;
      SQLITE_SHARED.delete(this.sharedKey);
    }
    await this.db.destroy();
  }
}
