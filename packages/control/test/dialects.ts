// Every control test runs twice: on SQLite (a fresh file per test) and on a real PostgreSQL
// started by the testkit (one server per test file, a fresh database per test). Under CI=true a
// PostgreSQL that cannot start fails the run instead of skipping its half.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { type PostgresBackend, postgresUnavailable, startPostgres } from '@kk/testkit';
import { afterAll, afterEach, beforeAll, describe } from 'vitest';
import { Control, type ControlOptions } from '../src/index.js';

const unavailable = postgresUnavailable();
if (unavailable && process.env.CI) throw new Error(`CI must run the control tests on PostgreSQL: ${unavailable}`);

export interface DialectContext {
  dialect: 'sqlite' | 'postgres';
  /** A fresh, empty database's URL. */
  freshUrl(): Promise<string>;
  /** Open (and migrate) a Control on `url` (default: a fresh database); closed after the test. */
  open(url?: string, opts?: ControlOptions): Promise<Control>;
}

export function describeDialects(title: string, body: (ctx: DialectContext) => void): void {
  describe(`${title} [sqlite]`, () => body(context('sqlite')));
  describe.skipIf(!!unavailable)(`${title} [postgres]${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => body(context('postgres')));
}

function context(dialect: 'sqlite' | 'postgres'): DialectContext {
  let dir: string;
  let pg: PostgresBackend | undefined;
  let n = 0;
  const opened: Control[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kk-control-test-'));
    if (dialect === 'postgres') pg = await startPostgres();
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((c) => c.close().catch(() => {})));
  });
  afterAll(async () => {
    await pg?.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const ctx: DialectContext = {
    dialect,
    async freshUrl() {
      if (dialect === 'sqlite') return `sqlite://${path.join(dir, `t${++n}.db`)}`;
      return pg!.createDatabase();
    },
    async open(url, opts) {
      const c = await Control.open(url ?? (await ctx.freshUrl()), opts);
      opened.push(c);
      return c;
    },
  };
  return ctx;
}

/** Run `fn` `n` times with at most `limit` at once. */
export async function parallel<T>(n: number, limit: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, limit) }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await fn(i);
      }
    }),
  );
  return out;
}
