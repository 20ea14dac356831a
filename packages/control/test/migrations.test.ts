import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { isKkError } from '@kk/core';
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { ControlDb, MIGRATIONS, SCHEMA_VERSION, migrate, parseDbUrl } from '../src/index.js';
import { describeDialects } from './dialects.js';

describeDialects('migrations', (ctx) => {
  it('apply every step once, record it, and do nothing on the next start', async () => {
    const url = await ctx.freshUrl();
    const a = await ctx.open(url);
    expect(a.migration).toEqual({ from: 0, to: SCHEMA_VERSION, applied: MIGRATIONS.map((m) => ({ version: m.version, name: m.name })) });
    await a.close();
    const b = await ctx.open(url);
    expect(b.migration).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION, applied: [] });
    const rows = await b.cdb.db.selectFrom('kk_schema').selectAll().execute();
    expect(rows.map((r) => Number(r.version))).toEqual(MIGRATIONS.map((m) => m.version));
  });

  it('two instances starting at once apply each step exactly once', async () => {
    const url = await ctx.freshUrl();
    const opened = await Promise.all([ctx.open(url), ctx.open(url), ctx.open(url)]);
    const applied = opened.map((c) => c.migration.applied.length).sort();
    expect(applied).toEqual([0, 0, MIGRATIONS.length]);
    const rows = await opened[0]!.cdb.db.selectFrom('kk_schema').selectAll().execute();
    expect(rows).toHaveLength(MIGRATIONS.length);
  });

  it('a later migration added to the code runs on the next start, inside the lock', async () => {
    const url = await ctx.freshUrl();
    await (await ctx.open(url)).close();
    const cdb = await ControlDb.open(url);
    try {
      const next = { version: SCHEMA_VERSION + 1, name: 'nodes', up: async (db: never) => void (await (db as any).schema.createTable('future_nodes').addColumn('id', 'text', (c: any) => c.primaryKey()).execute()) };
      const r = await migrate(cdb, [...MIGRATIONS, next]);
      expect(r).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION + 1, applied: [{ version: SCHEMA_VERSION + 1, name: 'nodes' }] });
      await sql`insert into future_nodes (id) values ('n1')`.execute(cdb.db);
      expect((await migrate(cdb, [...MIGRATIONS, next])).applied).toEqual([]);
    } finally {
      await cdb.close();
    }
  });

  it('refuses a database whose schema is newer than the code, changing nothing', async () => {
    const url = await ctx.freshUrl();
    const a = await ctx.open(url);
    await a.cdb.db.insertInto('kk_schema').values({ version: 999, name: 'from the future', applied: new Date().toISOString() }).execute();
    await a.close();
    const err = await ctx.open(url).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isKkError(err, 'STORE_INVALID')).toBe(true);
    expect((err as Error).message).toMatch(new RegExp(`schema version 999, newer than this kk knows \\(${SCHEMA_VERSION}\\)`));
    const cdb = await ControlDb.open(url);
    try {
      const rows = await cdb.db.selectFrom('kk_schema').select('version').orderBy('version').execute();
      expect(rows.map((r) => Number(r.version))).toEqual([...MIGRATIONS.map((m) => m.version), 999]);
    } finally {
      await cdb.close();
    }
  });
});

describe('control database URLs', () => {
  it('parse sqlite and postgres URLs', () => {
    expect(parseDbUrl('sqlite:///var/lib/kk/kk.db')).toMatchObject({ dialect: 'sqlite', path: '/var/lib/kk/kk.db' });
    expect(parseDbUrl('sqlite:state/kk.db', '/srv')).toMatchObject({ dialect: 'sqlite', path: '/srv/state/kk.db' });
    expect(parseDbUrl('sqlite::memory:')).toMatchObject({ dialect: 'sqlite', path: ':memory:' });
    const pg = parseDbUrl('postgres://kk:s3cret@db.internal:5432/kk');
    expect(pg).toMatchObject({ dialect: 'postgres', connectionString: 'postgres://kk:s3cret@db.internal:5432/kk' });
    expect(pg.display).toBe('postgres://kk:***@db.internal:5432/kk');
  });

  it.each([
    ['', /empty/],
    ['mysql://x/y', /unknown scheme/],
    ['sqlite://host/kk.db', /no host/],
    ['sqlite:///tmp/', /no database file/],
    ['postgres://kk@db.internal:5432', /no database name/],
    ['postgres://kk:pw@db.internal:99999/kk', /not a valid URL|bad port/],
  ])('refuse %j as CONFIG_INVALID', (url, why) => {
    let err: unknown;
    try {
      parseDbUrl(url);
    } catch (e) {
      err = e;
    }
    expect(isKkError(err, 'CONFIG_INVALID')).toBe(true);
    expect((err as Error).message).toMatch(why);
    expect((err as Error).message).not.toMatch(/pw@/);
  });

  it('an unreachable PostgreSQL is BACKEND, promptly', async () => {
    // A port that was free a moment ago: nothing listens there.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const err = await ControlDb.open(`postgres://kk:pw@127.0.0.1:${port}/kk`, { connectTimeoutMs: 2_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isKkError(err, 'BACKEND')).toBe(true);
    expect((err as Error).message).toContain(`postgres://kk:***@127.0.0.1:${port}/kk`);
  });

  it('an sqlite file that cannot be created is BACKEND', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'kk-control-url-'));
    await writeFile(path.join(dir, 'a-file'), '');
    const err = await ControlDb.open(`sqlite://${dir}/a-file/kk.db`).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isKkError(err, 'BACKEND')).toBe(true);
    await rm(dir, { recursive: true, force: true });
  });
});
