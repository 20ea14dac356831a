// Webhooks (seed 9, DESIGN 9): the webhooks, the outbox and the delivery log are rows of the
// control database (@kk/control). An event's deliveries are written in the same transaction as
// the event (Control.activity), before the request that caused it answers; sending happens later,
// off the request path: each instance's dispatcher claims due deliveries (a claim with an expiry,
// FOR UPDATE SKIP LOCKED on PostgreSQL), sends them, and records the outcome. Failed attempts are
// retried with exponential backoff and jitter; a claim left by an instance that died expires and
// is taken over, so every delivery is sent by one instance at a time.
import { createHmac } from 'node:crypto';
import { Agent, request } from 'undici';
import { forEachLimit } from '@kk/core';
import { type Control, type Delivery, type RetryPolicy, type Webhook, type WebhookConfigEntry, type WebhookInput } from '@kk/control';
import type { ServerConfig } from './config.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

export { publicWebhook, type Webhook, type WebhookInput, type Delivery, type DeliveryAttempt, type KkEvent } from '@kk/control';

export const SIGNATURE_HEADER = 'x-kk-signature-256';

/** `sha256=<hex>` HMAC of the exact body: what receivers recompute to trust a delivery. */
export function signBody(secret: string, body: string | Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
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
  /** Pending deliveries at the last scan (the queue-depth gauge). */
  depth = 0;

  constructor(
    private readonly control: Control,
    private readonly config: ServerConfig,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    this.agent = new Agent({ connect: { timeout: config.webhookTimeoutMs }, keepAliveTimeout: 10_000 });
  }

  private get policy(): RetryPolicy {
    return { maxAttempts: this.config.webhookMaxAttempts, backoffMs: this.config.webhookBackoffMs, backoffMaxMs: this.config.webhookBackoffMaxMs };
  }

  // ---- CRUD ----

  async list(): Promise<Webhook[]> {
    if (this.cache && Date.now() - this.cache.at < this.config.cacheTtlMs) return this.cache.list;
    const list = await this.control.webhooks.list();
    this.cache = { at: Date.now(), list };
    return list;
  }

  get(id: string): Promise<Webhook | undefined> {
    return this.control.webhooks.get(id);
  }

  async create(input: WebhookInput): Promise<Webhook> {
    const w = await this.control.webhooks.create(input);
    this.cache = undefined;
    return w;
  }

  async update(id: string, input: WebhookInput): Promise<Webhook | undefined> {
    const w = await this.control.webhooks.update(id, input);
    this.cache = undefined;
    return w;
  }

  async remove(id: string): Promise<boolean> {
    const ok = await this.control.webhooks.remove(id);
    this.cache = undefined;
    return ok;
  }

  /** Make the stored `cfg-*` webhooks match the config file (seed 9.3). */
  async syncConfig(hooks: WebhookConfigEntry[]): Promise<void> {
    await this.control.webhooks.syncConfig(hooks);
    this.cache = undefined;
  }

  // ---- the delivery log ----

  /** Send an earlier delivery's event again, as a new delivery with the same event id and body. */
  /** A `ping` to one webhook (control's Webhooks.ping), sent at once. */
  async ping(webhook: string, by: string): Promise<Delivery> {
    const d = await this.control.webhooks.ping(webhook, by);
    this.kick();
    return d;
  }

  async redeliver(webhook: string, deliveryId: string): Promise<Delivery | undefined> {
    const d = await this.control.webhooks.redeliver(webhook, deliveryId);
    if (d) this.kick();
    return d;
  }

  getDelivery(webhook: string, id: string): Promise<Delivery | undefined> {
    return this.control.webhooks.getDelivery(webhook, id);
  }

  /** The delivery log of a webhook, newest first unless `asc`. */
  deliveries(webhook: string, offset: number, limit: number, order: 'asc' | 'desc'): Promise<{ items: Delivery[]; total: number }> {
    return this.control.webhooks.deliveries(webhook, offset, limit, order);
  }

  // ---- dispatcher ----

  start(): void {
    this.timer = setInterval(() => this.kick(), this.config.webhookPollMs);
    this.timer.unref();
    this.kick();
  }

  /** Look for due deliveries soon; concurrent kicks coalesce into one more scan. */
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
    const batch = Math.max(16, this.config.webhookConcurrency * 4);
    const claimMs = this.config.webhookTimeoutMs * 2 + 30_000;
    do {
      this.again = false;
      const claimed = await this.control.webhooks.claimDue(this.control.owner, batch, claimMs);
      await forEachLimit(claimed, this.config.webhookConcurrency, (d) => this.attempt(d));
      if (claimed.length === batch) this.again = true;
    } while (this.again && !this.closed);
    this.depth = await this.control.webhooks.depth();
    const next = await this.control.webhooks.nextDue();
    if (next !== undefined && !this.closed) {
      clearTimeout(this.wake);
      this.wake = setTimeout(() => this.kick(), Math.min(this.config.webhookPollMs, Math.max(0, next - Date.now())) + 5);
      this.wake.unref();
    }
  }

  private async attempt(delivery: Delivery): Promise<void> {
    const owner = this.control.owner;
    if (this.closed) {
      await this.control.webhooks.release(owner, [delivery.id]).catch(() => {});
      return;
    }
    const hook = await this.get(delivery.webhook);
    const n = delivery.attempts.length + 1;
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
    if (this.closed && error) {
      // Shutting down: leave the attempt for the next start (or another instance).
      await this.control.webhooks.release(owner, [delivery.id]).catch(() => {});
      return;
    }
    const outcome: Parameters<Control['webhooks']['finish']>[2] = { duration_ms: Math.round(performance.now() - t0), final: !hook || !hook.active };
    if (status !== undefined) outcome.status = status;
    if (error) outcome.error = error;
    const done = await this.control.webhooks.finish(delivery.id, owner, outcome, this.policy);
    if (!done) {
      this.log.warn('webhook delivery claim lost before its outcome was recorded', { webhook: delivery.webhook, delivery: delivery.id, attempt: n });
      return;
    }
    this.metrics.webhookDeliveries.inc({ result: done.state === 'pending' ? 'retry' : done.state });
    this.log.info('webhook delivery', { webhook: delivery.webhook, delivery: delivery.id, event: delivery.event, attempt: n, status, error, state: done.state });
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

  /** Stop sending; undelivered deliveries stay pending for the next start (or another instance). */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    clearTimeout(this.wake);
    this.abort.abort();
    await this.ticking.catch(() => {});
    await this.control.webhooks.release(this.control.owner).catch(() => {});
    await this.agent.close().catch(() => {});
  }
}
