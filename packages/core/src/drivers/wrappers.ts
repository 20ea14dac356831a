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

