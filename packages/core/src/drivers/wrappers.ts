// Cross-cutting behaviour as drivers that wrap a driver (STYLE: restic's retry and sema
// backends): retry with jittered backoff, and a concurrency limit.
import type { Driver } from '../driver.js';
import { isTransient } from '../errors.js';

// Optional methods (flush, delete, recordPull, sweepTemp) are forwarded only when the inner driver has them.
const METHODS = ['get', 'stat', 'hasMany', 'listChildren', 'put', 'putIfAbsent', 'flush', 'delete', 'recordPull', 'sweepTemp'] as const;

function wrapMethods<D extends Driver>(inner: D, around: (call: () => Promise<unknown>) => Promise<unknown>): D {
  const out: Record<string, unknown> = {
    name: inner.name,
    capabilities: inner.capabilities,
    list: (prefix: string) => inner.list(prefix),
    close: () => inner.close(),
  };
  for (const m of METHODS) {
    const fn = (inner as unknown as Record<string, ((...a: unknown[]) => Promise<unknown>) | undefined>)[m];
    if (typeof fn === 'function') out[m] = (...args: unknown[]) => around(() => fn.apply(inner, args));
  }
  return out as unknown as D;
}

export interface RetryOptions {
  /** Attempts after the first. Default 4. */
  retries?: number;
  /** Base delay in ms; attempt n waits a random time up to base * 2^n. Default 100. */
  baseMs?: number;
  /** Which errors to retry. Default: BACKEND errors and network resets. */
  retryable?: (err: unknown) => boolean;
}

/**
 * Retry transient failures with full-jitter exponential backoff. Safe because every driver
 * method is idempotent (putIfAbsent's `false` on a retried success is handled by the Store,
 * which compares contents).
 */
export function withRetry<D extends Driver>(inner: D, opts: RetryOptions = {}): D {
  const retries = opts.retries ?? 4;
  const base = opts.baseMs ?? 100;
  const retryable = opts.retryable ?? isTransient;
  return wrapMethods(inner, async (call) => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call();
      } catch (err) {
        if (attempt >= retries || !retryable(err)) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * base * 2 ** attempt));
      }
    }
  });
}

/** At most `limit` backend calls in flight; the rest queue in order. */
export function withConcurrencyLimit<D extends Driver>(inner: D, limit: number): D {
  if (!(limit >= 1)) throw new TypeError('limit must be >= 1');
  let active = 0;
  const queue: (() => void)[] = [];
  return wrapMethods(inner, async (call) => {
    // A finishing call hands its slot straight to the next waiter, so `active` never overshoots.
    if (active >= limit) await new Promise<void>((r) => queue.push(r));
    else active++;
    try {
      return await call();
    } finally {
      const next = queue.shift();
      if (next) next();
      else active--;
    }
  });
}


// Read methods a rate limit counts (seed 004: "a request-rate limit on store reads").
const READS = new Set<string>(['get', 'stat', 'hasMany', 'listChildren']);

/**
 * At most `perSecond` read requests a second (a token bucket holding one second's worth, so a
 * burst never exceeds it); writes pass unthrottled. `list` is paged by the driver and counted
 * per call of the wrapper's other methods only.
 */
export function withRateLimit<D extends Driver>(inner: D, perSecond: number): D {
  if (!(perSecond > 0)) throw new TypeError('perSecond must be > 0');
  let tokens = perSecond;
  let last = Date.now();
  let chain: Promise<void> = Promise.resolve();
  const take = (): Promise<void> => {
    // One waiter at a time, in order: each takes a token or sleeps until the bucket refills one.
    const next = chain.then(async () => {
      for (;;) {
        const now = Date.now();
        tokens = Math.min(perSecond, tokens + ((now - last) / 1000) * perSecond);
        last = now;
        if (tokens >= 1) {
          tokens -= 1;
          return;
        }
        await new Promise((r) => setTimeout(r, Math.ceil(((1 - tokens) / perSecond) * 1000)));
      }
    });
    chain = next;
    return next;
  };
  const out = wrapMethods(inner, (call) => call());
  for (const m of READS) {
    const fn = (out as unknown as Record<string, ((...a: unknown[]) => Promise<unknown>) | undefined>)[m];
    if (fn) (out as unknown as Record<string, unknown>)[m] = async (...args: unknown[]) => (await take(), fn(...args));
  }
  return out;
}

/** One switch of a fallback driver: `from` failed with `reason`, `to` serves from now on. */
export interface FallbackEvent {
  from: string;
  to: string;
  reason: string;
}

/** A backend outage (after retries), as opposed to an answer such as NOT_FOUND or AUTH: worth trying the next store. */
export function isOutage(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return isTransient(err) || code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENOTFOUND';
}

/**
 * A list of stores tried in order (seed 004: the kk server first, the S3 bucket behind it
 * next): a call that fails with a backend error (after the inner driver's own retries) is
 * retried on the next store, which then serves every later call too, so a dead store costs one
 * failure, not one per request. Other errors (NOT_FOUND, AUTH, CHUNK_CORRUPT) are answers, not
 * outages, and are passed on. `events` says which stores failed and why; the pull result shows it.
 */
export function withFallback<D extends Driver>(
  stores: readonly { label: string; driver: D }[],
  onFallback?: (e: FallbackEvent) => void,
  /** Switches that happened before (stores that could not even be opened). */
  earlier: FallbackEvent[] = [],
): D & { events: FallbackEvent[] } {
  if (stores.length === 0) throw new TypeError('withFallback needs at least one store');
  let current = 0;
  const events: FallbackEvent[] = [...earlier];
  const first = stores[0]!.driver;
  const out: Record<string, unknown> = {
    name: stores.map((s) => s.driver.name).join('|'),
    capabilities: first.capabilities,
    events,
    list: (prefix: string) => stores[current]!.driver.list(prefix),
    close: async () => {
      for (const s of stores) await s.driver.close().catch(() => {});
    },
  };
  for (const m of METHODS) {
    if (typeof (first as unknown as Record<string, unknown>)[m] !== 'function') continue;
    out[m] = async (...args: unknown[]) => {
      for (;;) {
        const at = current;
        const fn = (stores[at]!.driver as unknown as Record<string, ((...a: unknown[]) => Promise<unknown>) | undefined>)[m];
        try {
          if (!fn) throw new TypeError(`store ${stores[at]!.label} cannot ${m}`);
          return await fn.apply(stores[at]!.driver, args);
        } catch (err) {
          if (at + 1 >= stores.length || !isOutage(err)) throw err;
          // Concurrent calls that failed on the same store switch once.
          if (current === at) {
            current = at + 1;
            const e = { from: stores[at]!.label, to: stores[at + 1]!.label, reason: (err as Error).message.split('\n')[0]! };
            events.push(e);
            onFallback?.(e);
          }
        }
      }
    };
  }
  return out as unknown as D & { events: FallbackEvent[] };
}
