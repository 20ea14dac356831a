// One-time import of the state an older kk server kept under `server/` in the store: tokens,
// webhooks, deliveries and their outbox entries, the audit log, open upload sessions, the last
// retention run and the bootstrap marker. It runs in one write transaction that ends by writing
// the `import.store` marker, so it happens once (a second start, or a second instance racing the
// first, imports nothing) and never half. The store objects are left in place (an older server
// pointed at the same store still works; nothing is lost if the database is replaced).
import type { ReadDriver } from '@kk/core';
import { sql } from 'kysely';
import { auditRow, type AuditEntry } from './audit.js';
import type { ControlDb, Executor } from './db.js';
import { type TokenRecord, tokenRow } from './tokens.js';
import { sessionRow, type UploadSession } from './uploads.js';
import { type Delivery, type Webhook, webhookRow } from './webhooks.js';

export const IMPORT_MARKER = 'import.store';
const IMPORT_LOCK = 0x6b6b_0003;

export interface ImportResult {
  /** False when an earlier start already imported (nothing was read). */
  imported: boolean;
  tokens: number;
  webhooks: number;
  deliveries: number;
  pending: number;
  audit: number;
  uploads: number;
}

async function readJson<T>(driver: ReadDriver, key: string): Promise<T | undefined> {
  const raw = await driver.get(key);
  if (!raw) return undefined;
  try {
    return JSON.parse(raw.toString('utf8')) as T;
  } catch {
    return undefined; // a torn object from a crashed writer: nothing to carry over
  }
}

export async function importStoreState(cdb: ControlDb, driver: ReadDriver): Promise<ImportResult> {
  const result: ImportResult = { imported: false, tokens: 0, webhooks: 0, deliveries: 0, pending: 0, audit: 0, uploads: 0 };
  const done = await cdb.db.selectFrom('settings').select('key').where('key', '=', IMPORT_MARKER).executeTakeFirst();
  if (done) return result;
  return cdb.writeTx(async (tx) => {
    // Instances racing at their first start: the second waits here, then sees the marker.
    if (cdb.dialect === 'postgres') await sql`select pg_advisory_xact_lock(${IMPORT_LOCK})`.execute(tx);
    if (await tx.selectFrom('settings').select('key').where('key', '=', IMPORT_MARKER).executeTakeFirst()) return result;
    const now = new Date().toISOString();
    const setting = (key: string, value: unknown) =>
      tx.insertInto('settings').values({ key, value: JSON.stringify(value), updated: now }).onConflict((oc) => oc.column('key').doNothing()).execute();

    for (const id of await driver.listChildren('server/tokens/')) {
      const t = await readJson<TokenRecord>(driver, `server/tokens/${id}`);
      if (!t?.id || !t.hash) continue;
      await tx.insertInto('tokens').values(tokenRow(t)).onConflict((oc) => oc.column('id').doNothing()).execute();
      result.tokens++;
    }
    for (const id of await driver.listChildren('server/webhooks/')) {
      const w = await readJson<Webhook>(driver, `server/webhooks/${id}`);
      if (!w?.id) continue;
      await tx.insertInto('webhooks').values(webhookRow(w)).onConflict((oc) => oc.column('id').doNothing()).execute();
      result.webhooks++;
    }
    // The outbox says which deliveries are still due, and when.
    const due = new Map<string, number>();
    for (const name of await driver.listChildren('server/outbox/')) {
      const m = /^(\d{13})-(dl-.+)$/.exec(name);
      if (!m) continue;
      const at = Number(m[1]);
      const prev = due.get(m[2]!);
      if (prev === undefined || at < prev) due.set(m[2]!, at);
    }
    for (const hook of await driver.listChildren('server/deliveries/')) {
      // Delivery ids sort by creation time.
      for (const id of await driver.listChildren(`server/deliveries/${hook}/`)) {
        const d = await readJson<Delivery>(driver, `server/deliveries/${hook}/${id}`);
        if (!d?.id) continue;
        let dueMs: number | null = null;
        if (d.state === 'pending') dueMs = due.get(d.id) ?? (d.next_attempt ? Date.parse(d.next_attempt) : Date.now());
        await insertDelivery(tx, d, dueMs);
        result.deliveries++;
        if (dueMs !== null) result.pending++;
      }
    }
    for (const day of (await driver.listChildren('server/audit/')).filter((d) => /^\d{4}-\d{2}-\d{2}$/.test(d))) {
      for (const name of await driver.listChildren(`server/audit/${day}/`)) {
        const e = await readJson<AuditEntry>(driver, `server/audit/${day}/${name}`);
        if (!e?.id || !e.action) continue;
        await tx.insertInto('audit').values(auditRow(e)).onConflict((oc) => oc.column('id').doNothing()).execute();
        result.audit++;
      }
    }
    for await (const o of driver.list('server/uploads/')) {
      if (!o.key.endsWith('/session')) continue;
      const s = await readJson<UploadSession>(driver, o.key);
      if (!s?.id || Date.parse(s.expires) <= Date.now()) continue;
      await tx.insertInto('upload_sessions').values(sessionRow(s)).onConflict((oc) => oc.doNothing()).execute();
      const base = o.key.slice(0, -'session'.length);
      for (const f of await driver.listChildren(`${base}files/`)) {
        const entry = await readJson<{ path: string }>(driver, `${base}files/${f}`);
        if (entry?.path) await tx.insertInto('upload_files').values({ session: s.id, path: entry.path, entry: JSON.stringify(entry) }).onConflict((oc) => oc.doNothing()).execute();
      }
      result.uploads++;
    }
    const lastRun = await readJson<unknown>(driver, 'server/retention/last-run');
    if (lastRun) await setting('retention.last-run', lastRun);
    const bootstrap = await readJson<unknown>(driver, 'server/bootstrap');
    if (bootstrap) await setting('bootstrap', bootstrap);
    result.imported = true;
    await setting(IMPORT_MARKER, { ...result, at: now });
    return result;
  });
}

async function insertDelivery(tx: Executor, d: Delivery, dueMs: number | null): Promise<void> {
  await tx
    .insertInto('deliveries')
    .values({
      id: d.id,
      webhook: d.webhook,
      event_seq: null,
      event_id: d.event_id,
      event: d.event,
      body: d.body,
      state: dueMs === null ? (d.state === 'pending' ? 'failed' : d.state) : 'pending',
      attempts: JSON.stringify(d.attempts ?? []),
      created: d.created,
      updated: d.updated,
      next_attempt: dueMs === null ? null : new Date(dueMs).toISOString(),
      due_ms: dueMs,
      claim_owner: null,
      claim_until_ms: null,
    })
    .onConflict((oc) => oc.column('id').doNothing())
    .execute();
}
