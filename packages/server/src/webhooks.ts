// Events and webhooks (seed 9, DESIGN 9). An event becomes one delivery per matching webhook:
// a delivery record (server/deliveries/<webhook>/<delivery>, the log the API shows) and an
// outbox entry (server/outbox/<due-ms>-<delivery>). Both are written before the request that
// caused the event answers; sending happens later, off the request path, from the outbox, by
// whichever instance claims the attempt first (server/claims/...). Failed attempts are retried
// with exponential backoff and jitter; the outbox survives restarts because it lives in the store.
import { createHmac, randomBytes } from 'node:crypto';
import { Agent, request } from 'undici';
import { KkError, type Store, forEachLimit } from '@kk/core';
import { type EventType, type ServerConfig, type WebhookConfig, checkEvents, checkWebhookUrl } from './config.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

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

export interface KkEvent {
  id: string;
  type: EventType;
  time: string;
  project: string;
  app: string;
  version?: string;
  manifest?: string;
  channel?: string;
  /** The version a promote or rollback moved away from. */
  previous?: string;
  actor: { token: string; agent?: string; address?: string };
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

interface OutboxItem {
  delivery: string;
  webhook: string;
  /** Attempts already made. */
  attempt: number;
  /**
   * The delivery itself, so the outbox entry alone is enough to send it: the entry is the one
   * write an event needs, and a delivery record that failed to be written is made from it.
   */
  event_id?: string;
  event?: string;
  body?: string;
  created?: string;
}

/** A write that failed and is retried from memory until it lands (or the server stops). */
interface Unsaved {
  key: string;
  item: OutboxItem;
}

const WEBHOOKS = 'server/webhooks/';
const OUTBOX = 'server/outbox/';
const DELIVERIES = 'server/deliveries/';
const CLAIMS = 'server/claims/';

export const SIGNATURE_HEADER = 'x-kk-signature-256';

/** `sha256=<hex>` HMAC of the exact body: what receivers recompute to trust a delivery. */
export function signBody(secret: string, body: string | Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

const timeId = (ms = Date.now()) => `${ms.toString(36).padStart(9, '0')}-${randomBytes(4).toString('hex')}`;
const outboxName = (due: number, delivery: string) => `${String(due).padStart(13, '0')}-${delivery}`;

export interface WebhookInput {
  name?: unknown;
  url?: unknown;
  events?: unknown;
  secret?: unknown;
  project?: unknown;
  app?: unknown;
  active?: unknown;
}

export class Webhooks {
  private cache: { at: number; list: Webhook[] } | undefined;
  private readonly agent: Agent;
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private wake: NodeJS.Timeout | undefined;
  private running = false;
  private again = false;
  private closed = false;
  private ticking: Promise<void> = Promise.resolve();
  /** Entries in the outbox at the last scan, plus those enqueued since. */
  private stored = 0;
  /** Outbox entries the store refused; retried at every scan. */
  private unsaved: Unsaved[] = [];
  /** Events that arrived while the webhook list could not be read; matched at the next scan. */
  private pendingEvents: KkEvent[] = [];

  constructor(
    private readonly store: Store,
    private readonly config: ServerConfig,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    this.agent = new Agent({ connect: { timeout: config.webhookTimeoutMs }, keepAliveTimeout: 10_000 });
  }

  /** Deliveries waiting to be sent (the queue-depth gauge): the outbox and what is not yet in it. */
  get depth(): number {
    return this.stored + this.unsaved.length + this.pendingEvents.length;
  }

  // ---- CRUD ----

  async list(): Promise<Webhook[]> {
    if (this.cache && Date.now() - this.cache.at < this.config.cacheTtlMs) return this.cache.list;
    const ids = await this.store.driver.listChildren(WEBHOOKS);
    const list: Webhook[] = [];
    await forEachLimit(ids, 16, async (id) => {
      const w = await this.get(id);
      if (w) list.push(w);
    });
    list.sort((a, b) => (a.created === b.created ? (a.id < b.id ? -1 : 1) : a.created < b.created ? -1 : 1));
    this.cache = { at: Date.now(), list };
    return list;
  }

  async get(id: string): Promise<Webhook | undefined> {
    const raw = await this.store.driver.get(`${WEBHOOKS}${id}`);
    return raw ? (JSON.parse(raw.toString('utf8')) as Webhook) : undefined;
  }

  async create(input: WebhookInput, source: 'api' | 'config' = 'api', id = `wh-${randomBytes(8).toString('hex')}`): Promise<Webhook> {
    const now = new Date().toISOString();
    const w = validate({ name: input.name ?? id, url: input.url, events: input.events ?? ['*'], active: input.active ?? true, secret: input.secret, project: input.project, app: input.app });
    const hook: Webhook = { id, ...w, secret: w.secret ?? this.config.webhookSecret ?? randomBytes(24).toString('base64url'), source, created: now, updated: now };
    await this.save(hook);
    return hook;
  }

  async update(id: string, input: WebhookInput): Promise<Webhook | undefined> {
    const prev = await this.get(id);
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
    await this.save(hook);
    return hook;
  }

  async remove(id: string): Promise<boolean> {
    if (!(await this.get(id))) return false;
    await this.store.pruner.delete(`${WEBHOOKS}${id}`);
    this.cache = undefined;
    return true;
  }

  private async save(hook: Webhook): Promise<void> {
    await this.store.writer.put(`${WEBHOOKS}${hook.id}`, Buffer.from(JSON.stringify(hook)));
    this.cache = undefined;
  }

  /** Make the stored `cfg-*` webhooks match the config file (seed 9.3). */
  async syncConfig(hooks: WebhookConfig[]): Promise<void> {
    const wanted = new Map(hooks.map((h) => [`cfg-${h.name}`, h]));
    for (const w of await this.list()) {
      if (w.source === 'config' && !wanted.has(w.id)) await this.remove(w.id);
    }
    for (const [id, h] of wanted) {
      const prev = await this.get(id);
      const input: WebhookInput = { name: h.name, url: h.url, events: h.events, secret: h.secret, project: h.project, app: h.app, active: true };
      if (!prev) await this.create(input, 'config', id);
      else await this.update(id, { ...input, project: h.project ?? null, app: h.app ?? null });
    }
  }

  // ---- events ----

  /**
   * Record one delivery per matching webhook and wake the dispatcher. Never waits for a
   * receiver, and never fails the operation that caused the event: a store write that keeps
   * failing is retried from memory by the dispatcher (and counted in the queue depth).
   */
  async emit(event: Omit<KkEvent, 'id' | 'time'>): Promise<KkEvent> {
    const full: KkEvent = { id: `evt-${timeId()}`, time: new Date().toISOString(), ...event };
    let all: Webhook[];
    try {
      all = await withRetries(() => this.list());
    } catch (err) {
      // Without the list nobody knows who wants the event: keep it and match it later.
      this.log.error('webhook list failed; the event is kept in memory and matched again', { event: full.id, err: String(err) });
      this.pendingEvents.push(full);
      return full;
    }
    await this.deliver(full, all);
    this.kick();
    return full;
  }

  private async deliver(full: KkEvent, all: Webhook[]): Promise<void> {
    const hooks = all.filter(
      (w) =>
        w.active &&
        (w.events.includes('*') || w.events.includes(full.type)) &&
        (!w.project || w.project === full.project) &&
        (!w.app || w.app === full.app),
    );
    if (hooks.length === 0) return;
    const body = JSON.stringify(full);
    await Promise.all(hooks.map((w) => this.enqueue(w.id, full.id, full.type, body)));
  }

  /**
   * The outbox entry first (it carries the whole delivery), then the delivery record: once the
   * entry is stored the delivery will be sent, even if the record could not be written.
   */
  private async enqueue(webhook: string, eventId: string, type: string, body: string): Promise<Delivery> {
    const now = new Date();
    const delivery: Delivery = {
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
    const item: OutboxItem = { delivery: delivery.id, webhook, attempt: 0, event_id: eventId, event: type, body, created: delivery.created };
    const key = `${OUTBOX}${outboxName(now.getTime(), delivery.id)}`;
    try {
      await withRetries(() => this.store.writer.put(key, Buffer.from(JSON.stringify(item))));
      this.stored++;
    } catch (err) {
      this.log.error('webhook outbox write failed; retrying from memory', { webhook, delivery: delivery.id, err: String(err) });
      this.unsaved.push({ key, item });
    }
    await withRetries(() => this.putDelivery(delivery)).catch((err) => {
      this.log.warn('webhook delivery record not written yet; the outbox entry recreates it', { webhook, delivery: delivery.id, err: String(err) });
    });
    return delivery;
  }

  /** Write what failed to be written earlier (events not yet matched, outbox entries). */
  private async flushUnsaved(): Promise<void> {
    if (this.pendingEvents.length) {
      const list = await this.list().catch(() => undefined);
      if (list) for (const e of this.pendingEvents.splice(0)) await this.deliver(e, list);
    }
    for (const u of this.unsaved.splice(0)) {
      try {
        await this.store.writer.put(u.key, Buffer.from(JSON.stringify(u.item)));
        this.stored++;
      } catch {
        this.unsaved.push(u);
      }
    }
  }

  /** Send an earlier delivery's event again, as a new delivery with the same event id and body. */
  async redeliver(webhook: string, deliveryId: string): Promise<Delivery | undefined> {
    const d = await this.getDelivery(webhook, deliveryId);
    if (!d) return undefined;
    const next = await this.enqueue(webhook, d.event_id, d.event, d.body);
    this.kick();
    return next;
  }

  async getDelivery(webhook: string, id: string): Promise<Delivery | undefined> {
    const raw = await this.store.driver.get(`${DELIVERIES}${webhook}/${id}`);
    return raw ? (JSON.parse(raw.toString('utf8')) as Delivery) : undefined;
  }

  /** The delivery log of a webhook, newest first unless `asc`. */
  async deliveries(webhook: string, offset: number, limit: number, order: 'asc' | 'desc'): Promise<{ items: Delivery[]; total: number }> {
    let ids = await this.store.driver.listChildren(`${DELIVERIES}${webhook}/`);
    if (order === 'desc') ids = ids.reverse();
    const page = ids.slice(offset, offset + limit);
    const items: (Delivery | undefined)[] = new Array(page.length);
    await forEachLimit(page.keys(), 16, async (i) => {
      items[i] = await this.getDelivery(webhook, page[i]!);
    });
    return { items: items.filter((d): d is Delivery => !!d), total: ids.length };
  }

  private putDelivery(d: Delivery): Promise<void> {
    return this.store.writer.put(`${DELIVERIES}${d.webhook}/${d.id}`, Buffer.from(JSON.stringify(d)));
  }

  // ---- dispatcher ----

  start(): void {
    this.timer = setInterval(() => this.kick(), this.config.webhookPollMs);
    this.timer.unref();
    this.kick();
  }

  /** Scan the outbox soon; concurrent kicks coalesce into one more scan. */
  kick(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    this.ticking = this.scan()
      .catch((err) => this.log.error('webhook dispatcher failed', { err: String(err) }))
      .finally(() => {
        this.running = false;
      });
  }

  private async scan(): Promise<void> {
    do {
      this.again = false;
      await this.flushUnsaved();
      const names = (await this.store.driver.listChildren(OUTBOX)).filter((n) => /^\d{13}-/.test(n));
      this.stored = names.length;
      const now = Date.now();
      const due = names.filter((n) => Number(n.slice(0, 13)) <= now).slice(0, 500);
      await forEachLimit(due, this.config.webhookConcurrency, (n) => this.attempt(n));
      const later = names.map((n) => Number(n.slice(0, 13))).filter((t) => t > now);
      if (later.length && !this.closed) {
        clearTimeout(this.wake);
        this.wake = setTimeout(() => this.kick(), Math.max(0, Math.min(...later) - Date.now()) + 5);
        this.wake.unref();
      }
      if (due.length === 500) this.again = true;
    } while (this.again && !this.closed);
  }

  private async attempt(name: string): Promise<void> {
    if (this.closed) return;
    const key = `${OUTBOX}${name}`;
    const raw = await this.store.driver.get(key);
    if (!raw) return; // another instance finished it
    const item = JSON.parse(raw.toString('utf8')) as OutboxItem;
    const claim = `${CLAIMS}${item.delivery}.${item.attempt}`;
    const lease = Date.now() + this.config.webhookTimeoutMs * 2 + 30_000;
    if (!(await this.store.writer.putIfAbsent(claim, Buffer.from(JSON.stringify({ expires: lease }))))) {
      // Someone holds this attempt; take it over only if that instance died holding it.
      const held = await this.store.driver.get(claim);
      const expires = held ? (JSON.parse(held.toString('utf8')) as { expires: number }).expires : 0;
      if (expires < Date.now()) await this.store.pruner.delete(claim);
      return;
    }
    try {
      const [hook, stored] = await Promise.all([this.get(item.webhook), this.getDelivery(item.webhook, item.delivery)]);
      const delivery = stored ?? fromItem(item);
      if (!delivery) {
        await this.store.pruner.delete(key);
        return;
      }
      const n = Math.max(delivery.attempts.length, item.attempt) + 1;
      const t0 = performance.now();
      let status: number | undefined;
      let error: string | undefined;
      if (!hook || !hook.active) error = hook ? 'webhook is inactive' : 'webhook was deleted';
      else {
        try {
          status = await this.send(hook, delivery, n);
          if (status < 200 || status >= 300) error = `receiver answered ${status}`;
        } catch (err) {
          error = (err as Error).message || String(err);
        }
      }
      if (this.closed && error) return; // shutting down: leave the attempt for the next start
      const attempt: DeliveryAttempt = { n, at: new Date().toISOString(), duration_ms: Math.round(performance.now() - t0) };
      if (status !== undefined) attempt.status = status;
      if (error) attempt.error = error;
      delivery.attempts.push(attempt);
      delivery.updated = attempt.at;
      const giveUp = !hook || !hook.active || n >= this.config.webhookMaxAttempts;
      if (!error) {
        delivery.state = 'delivered';
        delivery.next_attempt = null;
        this.metrics.webhookDeliveries.inc({ result: 'delivered' });
      } else if (giveUp) {
        delivery.state = 'failed';
        delivery.next_attempt = null;
        this.metrics.webhookDeliveries.inc({ result: 'failed' });
      } else {
        const backoff = Math.min(this.config.webhookBackoffMaxMs, this.config.webhookBackoffMs * 2 ** (n - 1));
        const due = Date.now() + Math.round(backoff * (0.5 + Math.random() * 0.5));
        delivery.next_attempt = new Date(due).toISOString();
        this.metrics.webhookDeliveries.inc({ result: 'retry' });
        await this.store.writer.put(`${OUTBOX}${outboxName(due, delivery.id)}`, Buffer.from(JSON.stringify({ ...item, attempt: n })));
      }
      // The outbox decides what is sent: this attempt's entry goes as soon as its outcome is
      // settled, so a delivery record the store refuses never causes a resend.
      await this.store.pruner.delete(key);
      this.stored = Math.max(0, this.stored - (delivery.state === 'pending' ? 0 : 1));
      await withRetries(() => this.putDelivery(delivery)).catch((err) => this.log.warn('webhook delivery log not updated', { webhook: item.webhook, delivery: delivery.id, err: String(err) }));
      this.log.info('webhook delivery', { webhook: item.webhook, delivery: delivery.id, event: delivery.event, attempt: n, status, error, state: delivery.state });
    } finally {
      await this.store.pruner.delete(claim).catch(() => {});
    }
  }

  private async send(hook: Webhook, d: Delivery, n: number): Promise<number> {
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.config.webhookTimeoutMs)]);
    const res = await request(hook.url, {
      method: 'POST',
      dispatcher: this.agent,
      body: d.body,
      signal,
      headersTimeout: this.config.webhookTimeoutMs,
      bodyTimeout: this.config.webhookTimeoutMs,
      headers: {
        'content-type': 'application/json',
        'user-agent': 'kk-server',
        'x-kk-event': d.event,
        'x-kk-event-id': d.event_id,
        'x-kk-delivery-id': d.id,
        'x-kk-delivery-attempt': String(n),
        [SIGNATURE_HEADER]: signBody(hook.secret, d.body),
      },
    });
    await res.body.dump().catch(() => {});
    return res.statusCode;
  }

  /** Stop sending; undelivered entries stay in the outbox for the next start. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    clearTimeout(this.wake);
    this.abort.abort();
    await this.ticking.catch(() => {});
    await this.agent.close().catch(() => {});
  }
}

/** A delivery record rebuilt from its outbox entry (written before the record). */
function fromItem(item: OutboxItem): Delivery | undefined {
  if (item.body === undefined || item.event === undefined || item.event_id === undefined) return undefined;
  const created = item.created ?? new Date().toISOString();
  return { id: item.delivery, webhook: item.webhook, event_id: item.event_id, event: item.event, body: item.body, state: 'pending', attempts: [], created, updated: created, next_attempt: created };
}

/** A store write retried a few times, shortly: most failures are a moment's contention. */
async function withRetries<T>(fn: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts) throw err;
      await new Promise((r) => setTimeout(r, 20 * i));
    }
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
