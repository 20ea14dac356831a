// The events table: every state change appends one row with a monotonically increasing `seq`,
// in the same transaction as the change. Webhook deliveries are fed from it: appending an event
// of a webhook type (util.ts EVENT_TYPES: the store's, the fleet's, deploy.*) inserts, in that
// same transaction, one pending delivery per matching webhook, so an event with a subscriber can never lack its
// delivery, and never gets two (a unique index on (event_seq, webhook)).
//
// Gap-free reading: on SQLite BEGIN IMMEDIATE serializes writers, so seqs commit in order. On
// PostgreSQL an identity column hands out numbers before commit, so a reader could see seq 11
// before 10 commits; appending takes a transaction-scoped advisory lock, which makes event
// inserts commit in seq order. A client that read up to seq N and asks `since=N` misses nothing.
import { sql } from 'kysely';
import type { Selectable } from 'kysely';
import type { ControlDb, Executor } from './db.js';
import type { EventsTable } from './schema.js';
import { EVENT_TYPES, type EventType, STORE_EVENT_TYPES, stripUndefined, timeId } from './util.js';
import { matchesEvent, webhookFromRow } from './webhooks.js';


/** An event as webhooks receive it (the exact body, byte for byte, is stored). */
export interface KkEvent {
  id: string;
  type: string;
  time: string;
  project?: string;
  app?: string;
  version?: string;
  manifest?: string;
  channel?: string;
  /** The version a promote or rollback moved away from. */
  previous?: string;
  actor: { token: string; agent?: string; address?: string };
  /** Anything else the change carries (token id, webhook id, target, node, reason...). Not set on store event types. */
  details?: Record<string, unknown>;
}

export interface StoredEvent extends KkEvent {
  seq: number;
}

export type EventInput = Omit<KkEvent, 'id' | 'time'> & { time?: string };

const EVENTS_LOCK = 0x6b6b_0002;

export function isWebhookEvent(type: string): type is EventType {
  return (EVENT_TYPES as readonly string[]).includes(type);
}

export interface AppendResult {
  seq: number;
  event: KkEvent;
  /** Deliveries created for it (ids). */
  deliveries: string[];
}

export class Events {
  private readonly listeners = new Set<() => void>();
  private notifyTimer: NodeJS.Timeout | undefined;

  constructor(private readonly cdb: ControlDb) {}

  /**
   * Be told, soon after, that events were appended through this instance (the live stream looks
   * at once instead of at its next poll). A hint only: the transaction may not have committed yet,
   * and other instances' events arrive by polling.
   */
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private notifySoon(): void {
    if (this.listeners.size === 0 || this.notifyTimer) return;
    this.notifyTimer = setTimeout(() => {
      this.notifyTimer = undefined;
      for (const fn of [...this.listeners]) fn();
    }, 20);
    this.notifyTimer.unref();
  }

  /**
   * Append an event inside `tx` (a writeTx) and fan it out to matching webhooks. Webhook event
   * types need project and app (as before: an event is about one app).
   */
  async append(tx: Executor, input: EventInput): Promise<AppendResult> {
    if (this.cdb.dialect === 'postgres') await sql`select pg_advisory_xact_lock(${EVENTS_LOCK})`.execute(tx);
    const { time, ...rest } = input;
    const event: KkEvent = { id: `evt-${timeId()}`, time: time ?? new Date().toISOString(), ...stripUndefined(rest) } as KkEvent;
    const body = JSON.stringify(event);
    const row = await tx
      .insertInto('events')
      .values({ id: event.id, type: event.type, time: event.time, project: event.project ?? null, app: event.app ?? null, version: event.version ?? null, body })
      .returning('seq')
      .executeTakeFirstOrThrow();
    const seq = Number(row.seq);
    const deliveries: string[] = [];
    // A store event is about one app; fleet and deploy events may concern a node or a project only.
    if (isWebhookEvent(event.type) && ((event.project && event.app) || !(STORE_EVENT_TYPES as readonly string[]).includes(event.type))) {
      const hooks = (await tx.selectFrom('webhooks').selectAll().where('active', '=', 1).execute()).map(webhookFromRow);
      const now = new Date();
      for (const w of hooks.filter((h) => matchesEvent(h, event))) {
        const id = `dl-${timeId(now.getTime())}`;
        await tx
          .insertInto('deliveries')
          .values({
            id,
            webhook: w.id,
            event_seq: seq,
            event_id: event.id,
            event: event.type,
            body,
            state: 'pending',
            attempts: '[]',
            created: now.toISOString(),
            updated: now.toISOString(),
            next_attempt: now.toISOString(),
            due_ms: now.getTime(),
            claim_owner: null,
            claim_until_ms: null,
          })
          .execute();
        deliveries.push(id);
      }
    }
    this.notifySoon();
    return { seq, event, deliveries };
  }

  /** Append in its own transaction. */
  emit(input: EventInput): Promise<AppendResult> {
    return this.cdb.writeTx((tx) => this.append(tx, input));
  }

  /** The highest seq so far (0 for none): what list responses carry. */
  async current(ex: Executor = this.cdb.db): Promise<number> {
    const r = await ex.selectFrom('events').select((eb) => eb.fn.max('seq').as('s')).executeTakeFirst();
    return Number(r?.s ?? 0);
  }

  /**
   * Events with seq > `since`, oldest first, at most `limit`. `next_since` is the seq to ask from
   * next (the last one returned when there are more, else the current highest: every event up to
   * it was considered); `seq` the current highest.
   */
  async since(
    since: number,
    limit: number,
    filter: { type?: string; project?: string; app?: string; visible?: { project: string; apps?: string[] } } = {},
  ): Promise<{ items: StoredEvent[]; next_since: number; seq: number; more: boolean }> {
    const current = await this.current();
    let q = this.cdb.db.selectFrom('events').selectAll().where('seq', '>', since);
    if (filter.type) q = q.where('type', '=', filter.type);
    if (filter.project) q = q.where('project', '=', filter.project);
    if (filter.app) q = q.where('app', '=', filter.app);
    if (filter.visible) {
      q = q.where('project', '=', filter.visible.project);
      if (filter.visible.apps) q = q.where('app', 'in', filter.visible.apps.length ? filter.visible.apps : ['']);
    }
    // Never past `current`, so next_since cannot skip an event committed after this read began.
    const rows = await q.where('seq', '<=', current).orderBy('seq').limit(limit + 1).execute();
    const more = rows.length > limit;
    const items = rows.slice(0, limit).map(eventFromRow);
    return { items, next_since: more ? items[items.length - 1]!.seq : Math.max(since, current), seq: current, more };
  }
}

export function eventFromRow(r: Selectable<EventsTable>): StoredEvent {
  return { seq: Number(r.seq), ...(JSON.parse(r.body) as KkEvent) };
}
