// Small named values of the control plane (the bootstrap marker, the last retention run, the
// store import marker). `putIfAbsent` is the once-only primitive.
import type { ControlDb, Executor } from './db.js';

export class Settings {
  constructor(private readonly cdb: ControlDb) {}

  async get<T = unknown>(key: string, ex: Executor = this.cdb.db): Promise<T | undefined> {
    const r = await ex.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst();
    return r ? (JSON.parse(r.value) as T) : undefined;
  }

  async put(key: string, value: unknown, ex: Executor = this.cdb.db): Promise<void> {
    const row = { key, value: JSON.stringify(value), updated: new Date().toISOString() };
    await ex.insertInto('settings').values(row).onConflict((oc) => oc.column('key').doUpdateSet({ value: row.value, updated: row.updated })).execute();
  }

  /** True if this call created `key`. */
  async putIfAbsent(key: string, value: unknown, ex: Executor = this.cdb.db): Promise<boolean> {
    const r = await ex
      .insertInto('settings')
      .values({ key, value: JSON.stringify(value), updated: new Date().toISOString() })
      .onConflict((oc) => oc.column('key').doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0) > 0;
  }
}
