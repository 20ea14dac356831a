// Webhooks (seed 9, DESIGN 9): CRUD, the delivery log, and the outbox as the rules a dispatcher
// follows. The outbox is the set of pending deliveries (`due_ms IS NOT NULL`). A dispatcher
// claims due ones (a claim owner + an expiry, taken with FOR UPDATE SKIP LOCKED on PostgreSQL,
// under BEGIN IMMEDIATE on SQLite), sends, and reports the outcome with `finish`, which only
// applies while it still holds the claim. An instance that dies holding claims hands them over
// when they expire. Sending itself (HTTP) is the server's job.
import { randomBytes } from 'node:crypto';
import { KkError } from '@kk/core';
import type { ControlDb, Executor } from './db.js';
import type { KkEvent } from './events.js';
import { EVENT_TYPES, timeId } from './util.js';
import type { DeliveriesTable, WebhooksTable } from './schema.js';

export interface Webhook {
  id: string;
  name: string;
  url: string;
  events: string[];
  secret: string;
  project?: string;
  app?: string;
  active: boolean;
  /** `config` webhooks are rewritten from the config file at every start. */
  source: 'api' | 'config';
  created: string;
  updated: string;
}

export interface DeliveryAttempt {
  n: number;
  at: string;
  status?: number;
  error?: string;
  duration_ms: number;
}

export interface Delivery {
  id: string;
  webhook: string;
  event_id: string;
  event: string;
  /** The exact body sent (and signed) on every attempt. */
  body: string;
  state: 'pending' | 'delivered' | 'failed';
  attempts: DeliveryAttempt[];
  created: string;
  updated: string;
  next_attempt: string | null;
}

export interface WebhookInput {
  name?: unknown;
  url?: unknown;
  events?: unknown;
  secret?: unknown;
  project?: unknown;
  app?: unknown;
  active?: unknown;
}

export interface WebhookConfigEntry {
  name: string;
  url: string;
  events: string[];
  secret?: string;
  project?: string;
  app?: string;
}

export interface RetryPolicy {
  maxAttempts: number;
  backoffMs: number;
  backoffMaxMs: number;
}

/** What a dispatcher reports for one attempt. */
export interface AttemptOutcome {
  status?: number;
  error?: string;
  duration_ms: number;
  /** The webhook is gone or inactive: no retry. */
  final?: boolean;
}

export function webhookFromRow(r: WebhooksTable): Webhook {
  const w: Webhook = {
    id: r.id,
    name: r.name,
    url: r.url,
    events: JSON.parse(r.events) as string[],
    secret: r.secret,
    active: !!r.active,
    source: r.source as Webhook['source'],
    created: r.created,
    updated: r.updated,
  };
  if (r.project !== null) w.project = r.project;
  if (r.app !== null) w.app = r.app;
  return w;
}

export function webhookRow(w: Webhook): WebhooksTable {
  return {
    id: w.id,
    name: w.name,
    url: w.url,
    events: JSON.stringify(w.events),
    secret: w.secret,
    project: w.project ?? null,
    app: w.app ?? null,
    active: w.active ? 1 : 0,
    source: w.source,
    created: w.created,
    updated: w.updated,
  };
}

export function deliveryFromRow(r: Pick<DeliveriesTable, 'id' | 'webhook' | 'event_id' | 'event' | 'body' | 'state' | 'attempts' | 'created' | 'updated' | 'next_attempt'>): Delivery {
  return {
    id: r.id,
    webhook: r.webhook,
    event_id: r.event_id,
    event: r.event,
    body: r.body,
    state: r.state as Delivery['state'],
    attempts: JSON.parse(r.attempts) as DeliveryAttempt[],
    created: r.created,
    updated: r.updated,
    next_attempt: r.next_attempt,
  };
}

/** Whether an active webhook wants `event` (its type and project/app filter). */
export function matchesEvent(w: Webhook, e: Pick<KkEvent, 'type' | 'project' | 'app'>): boolean {
  return w.active && (w.events.includes('*') || w.events.includes(e.type)) && (!w.project || w.project === e.project) && (!w.app || w.app === e.app);
}

export function checkWebhookUrl(url: unknown): void {
  let u: URL;
  try {
    u = new URL(String(url));
  } catch {
    throw new KkError('CONFIG_INVALID', `webhook url ${JSON.stringify(url)} is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new KkError('CONFIG_INVALID', `webhook url must be http(s), got ${u.protocol}`);
}

export function checkEvents(events: unknown): asserts events is string[] {
  if (!Array.isArray(events) || events.length === 0) throw new KkError('CONFIG_INVALID', 'webhook events must be a non-empty list');
  for (const e of events) {
    if (e !== '*' && !(EVENT_TYPES as readonly string[]).includes(e)) {
      throw new KkError('CONFIG_INVALID', `unknown event ${JSON.stringify(e)} (known: ${EVENT_TYPES.join(', ')}, *)`);
    }
  }
}

/** The delay before attempt `n + 1` after `n` failed: exponential, capped, with jitter (50-100 %). */
export function backoffMs(policy: RetryPolicy, n: number, random = Math.random()): number {
  const base = Math.min(policy.backoffMaxMs, policy.backoffMs * 2 ** (n - 1));
  return Math.round(base * (0.5 + random * 0.5));
}

/**
 * Webhook rows kk keeps for its own use: the per-URL hooks a deploy's callback is delivered
 * through (signed and retried by the outbox like any webhook). No event matches them and the
 * listing leaves them out.
 */
export const HIDDEN_WEBHOOK_PREFIX = 'wh-deploy-cb-';

export class Webhooks {
  constructor(
    private readonly cdb: ControlDb,
    /** The secret a webhook created without one gets (the server's `webhook_secret`); random otherwise. */
    private readonly defaultSecret?: string,
  ) {}

  // ---- CRUD ----

  /** Every webhook, oldest first; without `hidden`, not the ones kk keeps for itself (HIDDEN_WEBHOOK_PREFIX). */
  async list(ex: Executor = this.cdb.db, opts: { hidden?: boolean } = {}): Promise<Webhook[]> {
    let q = ex.selectFrom('webhooks').selectAll();
    if (!opts.hidden) q = q.where('id', 'not like', `${HIDDEN_WEBHOOK_PREFIX}%`);
    const rows = await q.orderBy('created').orderBy('id').execute();
    return rows.map(webhookFromRow);
  }

  async get(id: string, ex: Executor = this.cdb.db): Promise<Webhook | undefined> {
    const row = await ex.selectFrom('webhooks').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? webhookFromRow(row) : undefined;
  }

  async create(input: WebhookInput, source: 'api' | 'config' = 'api', id = `wh-${randomBytes(8).toString('hex')}`, ex: Executor = this.cdb.db): Promise<Webhook> {
    const now = new Date().toISOString();
    const w = validate({ name: input.name ?? id, url: input.url, events: input.events ?? ['*'], active: input.active ?? true, secret: input.secret, project: input.project, app: input.app });
    const hook: Webhook = { id, ...w, secret: w.secret ?? this.defaultSecret ?? randomBytes(24).toString('base64url'), source, created: now, updated: now };
    await ex.insertInto('webhooks').values(webhookRow(hook)).execute();
    return hook;
  }

  async update(id: string, input: WebhookInput, ex: Executor = this.cdb.db): Promise<Webhook | undefined> {
    const prev = await this.get(id, ex);
    if (!prev) return undefined;
    const merged = validate({
      name: input.name ?? prev.name,
      url: input.url ?? prev.url,
      events: input.events ?? prev.events,
      active: input.active ?? prev.active,
      secret: input.secret ?? prev.secret,
      project: input.project === undefined ? prev.project : input.project,
      app: input.app === undefined ? prev.app : input.app,
    });
    const hook: Webhook = { ...prev, ...merged, secret: merged.secret ?? prev.secret, updated: new Date().toISOString() };
    if (merged.project === undefined) delete hook.project;
    if (merged.app === undefined) delete hook.app;
    const { id: _id, created: _c, ...row } = webhookRow(hook);
    await ex.updateTable('webhooks').set(row).where('id', '=', id).execute();
    return hook;
  }

  /** Delete a webhook. Its delivery log stays; its pending deliveries fail at their next attempt. */
  async remove(id: string, ex: Executor = this.cdb.db): Promise<boolean> {
    const r = await ex.deleteFrom('webhooks').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  /** Make the stored `cfg-*` webhooks match the config file (seed 9.3), in one transaction. */
  async syncConfig(hooks: WebhookConfigEntry[]): Promise<void> {
    await this.cdb.writeTx(async (tx) => {
      const wanted = new Map(hooks.map((h) => [`cfg-${h.name}`, h]));
      for (const w of await this.list(tx)) {
        if (w.source === 'config' && !wanted.has(w.id)) await this.remove(w.id, tx);
      }
      for (const [id, h] of wanted) {
        const prev = await this.get(id, tx);
        const input: WebhookInput = { name: h.name, url: h.url, events: h.events, secret: h.secret, project: h.project, app: h.app, active: true };
        if (!prev) await this.create(input, 'config', id, tx);
        else await this.update(id, { ...input, project: h.project ?? null, app: h.app ?? null }, tx);
      }
    });
  }

  // ---- the delivery log ----

  async getDelivery(webhook: string, id: string, ex: Executor = this.cdb.db): Promise<Delivery | undefined> {
    const row = await ex.selectFrom('deliveries').selectAll().where('id', '=', id).where('webhook', '=', webhook).executeTakeFirst();
    return row ? deliveryFromRow(row) : undefined;
  }

  /** The delivery log of a webhook, newest first unless `asc`. */
  async deliveries(webhook: string, offset: number, limit: number, order: 'asc' | 'desc'): Promise<{ items: Delivery[]; total: number }> {
    const [rows, count] = await Promise.all([
      this.cdb.db.selectFrom('deliveries').selectAll().where('webhook', '=', webhook).orderBy('n', order).limit(limit).offset(offset).execute(),
      this.cdb.db.selectFrom('deliveries').select((eb) => eb.fn.countAll().as('c')).where('webhook', '=', webhook).executeTakeFirst(),
    ]);
    return { items: rows.map(deliveryFromRow), total: Number(count?.c ?? 0) };
  }

  /** Send an earlier delivery's event again, as a new delivery with the same event id and body. */
  async redeliver(webhook: string, deliveryId: string): Promise<Delivery | undefined> {
    return this.cdb.writeTx(async (tx) => {
      const d = await this.getDelivery(webhook, deliveryId, tx);
      if (!d) return undefined;
      return this.enqueue(tx, webhook, d.event_id, d.event, d.body, null);
    });
  }

  /**
   * A `ping` delivery to this webhook alone (GitHub's "ping", seed 9: test a receiver without
   * causing an event): signed and logged like any delivery, never fanned out, not in the event log.
   */
  async ping(webhook: string, by: string): Promise<Delivery> {
    const now = new Date();
    const event = { id: `evt-ping-${timeId(now.getTime())}`, type: 'ping', time: now.toISOString(), webhook, by };
    return this.cdb.writeTx((tx) => this.enqueue(tx, webhook, event.id, 'ping', JSON.stringify(event), null));
  }

  /** A new pending delivery, due now. */
  async enqueue(ex: Executor, webhook: string, eventId: string, type: string, body: string, eventSeq: number | null): Promise<Delivery> {
    const now = new Date();
    const d: Delivery = {
      id: `dl-${timeId(now.getTime())}`,
      webhook,
      event_id: eventId,
      event: type,
      body,
      state: 'pending',
      attempts: [],
      created: now.toISOString(),
      updated: now.toISOString(),
      next_attempt: now.toISOString(),
    };
    await ex
      .insertInto('deliveries')
      .values({ ...d, attempts: '[]', event_seq: eventSeq, due_ms: now.getTime(), claim_owner: null, claim_until_ms: null })
      .execute();
    return d;
  }

  // ---- the outbox ----

  /** Pending deliveries (the queue-depth gauge). */
  async depth(): Promise<number> {
    const r = await this.cdb.db.selectFrom('deliveries').select((eb) => eb.fn.countAll().as('c')).where('due_ms', 'is not', null).executeTakeFirst();
    return Number(r?.c ?? 0);
  }

  /** When the next pending delivery that nobody holds becomes due (ms), if any. */
  async nextDue(): Promise<number | undefined> {
    const r = await this.cdb.db.selectFrom('deliveries').select((eb) => eb.fn.min('due_ms').as('d')).where('due_ms', 'is not', null).executeTakeFirst();
    return r?.d === null || r?.d === undefined ? undefined : Number(r.d);
  }

  /**
   * Claim up to `limit` due deliveries for `owner` until now + `claimMs`. A delivery claimed by
   * someone whose claim has not expired is skipped; an expired claim is taken over.
   */
  async claimDue(owner: string, limit: number, claimMs: number, now = Date.now()): Promise<Delivery[]> {
    return this.cdb.writeTx(async (tx) => {
      let pick = tx
        .selectFrom('deliveries')
        .select('id')
        .where('due_ms', '<=', now)
        .where((eb) => eb.or([eb('claim_until_ms', 'is', null), eb('claim_until_ms', '<', now)]))
        .orderBy('due_ms')
        .limit(limit);
      if (this.cdb.skipLocked) pick = pick.forUpdate().skipLocked();
      const ids = (await pick.execute()).map((r) => r.id);
      if (ids.length === 0) return [];
      const rows = await tx
        .updateTable('deliveries')
        .set({ claim_owner: owner, claim_until_ms: now + claimMs })
        .where('id', 'in', ids)
        .returningAll()
        .execute();
      return rows.map(deliveryFromRow);
    });
  }

  /**
   * Record one attempt made under `owner`'s claim: delivered, failed for good, or due again after
   * the backoff. Returns the updated delivery, or undefined when the claim was lost (another
   * instance took it over after it expired): then nothing is written.
   */
  async finish(id: string, owner: string, outcome: AttemptOutcome, policy: RetryPolicy): Promise<Delivery | undefined> {
    return this.cdb.writeTx(async (tx) => {
      const row = await tx.selectFrom('deliveries').selectAll().where('id', '=', id).where('claim_owner', '=', owner).where('due_ms', 'is not', null).executeTakeFirst();
      if (!row) return undefined;
      const d = deliveryFromRow(row);
      const n = d.attempts.length + 1;
      const attempt: DeliveryAttempt = { n, at: new Date().toISOString(), duration_ms: outcome.duration_ms };
      if (outcome.status !== undefined) attempt.status = outcome.status;
      if (outcome.error) attempt.error = outcome.error;
      d.attempts.push(attempt);
      d.updated = attempt.at;
      let due: number | null = null;
      if (!outcome.error) {
        d.state = 'delivered';
        d.next_attempt = null;
      } else if (outcome.final || n >= policy.maxAttempts) {
        d.state = 'failed';
        d.next_attempt = null;
      } else {
        due = Date.now() + backoffMs(policy, n);
        d.next_attempt = new Date(due).toISOString();
      }
      await tx
        .updateTable('deliveries')
        .set({ state: d.state, attempts: JSON.stringify(d.attempts), updated: d.updated, next_attempt: d.next_attempt, due_ms: due, claim_owner: null, claim_until_ms: null })
        .where('id', '=', id)
        .execute();
      return d;
    });
  }

  /** Give claims back without an attempt (shutting down mid-send): due again at once. */
  async release(owner: string, ids?: string[]): Promise<void> {
    let q = this.cdb.db.updateTable('deliveries').set({ claim_owner: null, claim_until_ms: null }).where('claim_owner', '=', owner);
    if (ids) q = q.where('id', 'in', ids.length ? ids : ['']);
    await q.execute();
  }
}

function validate(o: {
  name: unknown;
  url: unknown;
  events: unknown;
  active: unknown;
  secret: unknown;
  project: unknown;
  app: unknown;
}): Omit<Webhook, 'id' | 'source' | 'created' | 'updated' | 'secret'> & { secret?: string } {
  if (typeof o.name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$/.test(o.name)) {
    throw new KkError('CONFIG_INVALID', 'webhook name: 1-64 letters, digits, spaces, ".", "_" or "-"');
  }
  checkWebhookUrl(o.url);
  const events = typeof o.events === 'string' ? [o.events] : o.events;
  checkEvents(events);
  if (typeof o.active !== 'boolean') throw new KkError('CONFIG_INVALID', 'webhook active must be true or false');
  if (o.secret !== undefined && (typeof o.secret !== 'string' || o.secret.length < 8)) {
    throw new KkError('CONFIG_INVALID', 'webhook secret must be a string of at least 8 characters');
  }
  const out: Omit<Webhook, 'id' | 'source' | 'created' | 'updated' | 'secret'> & { secret?: string } = {
    name: o.name,
    url: String(o.url),
    events: [...new Set(events)],
    active: o.active,
  };
  if (o.secret !== undefined) out.secret = o.secret as string;
  for (const k of ['project', 'app'] as const) {
    const v = o[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string' || !/^[a-z0-9][a-z0-9._-]{0,63}$/.test(v)) throw new KkError('INVALID_NAME', `webhook ${k} ${JSON.stringify(v)} is not a valid name`);
    out[k] = v;
  }
  if (out.app && !out.project) throw new KkError('CONFIG_INVALID', 'a webhook filtered by app needs its project');
  return out;
}

/** A webhook as the API shows it: the secret is only returned when it is created. */
export function publicWebhook(w: Webhook): Omit<Webhook, 'secret'> & { has_secret: boolean } {
  const { secret, ...rest } = w;
  return { ...rest, has_secret: !!secret };
}
