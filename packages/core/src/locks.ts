// Push leases and the GC lock (DESIGN 8). A push writes a lease naming every chunk it relies
// on, then checks for a GC lock; GC writes its lock, then reads the leases. With a
// sequentially consistent store at least one side sees the other, so GC never sweeps a chunk
// an in-flight push counted on (a Dekker-style handshake, proven by a concurrent test).
import { randomUUID } from 'node:crypto';
import type { Digest } from './digest.js';
import { KkError } from './errors.js';
import { isPruneDriver } from './driver.js';
import { type Store, defaultActor } from './store.js';

export const GC_LOCK_KEY = 'locks/gc';
const LEASE_PREFIX = 'locks/push/';

interface LockBody {
  holder: string;
  created: string;
  expires: number;
}

interface LeaseBody extends LockBody {
  chunks: Digest[];
}

export interface LockTimings {
  /** How long a lease or GC lock stays valid without refresh. Default 1 hour. */
  ttlMs?: number;
  /** How long a push waits for a running GC. Default 30 minutes. */
  waitMs?: number;
  /** Poll interval while waiting. Default 250 ms. */
  pollMs?: number;
}

async function readLock<T extends LockBody>(store: Store, key: string): Promise<T | undefined> {
  const raw = await store.driver.get(key);
  if (!raw) return undefined;
  try {
    return JSON.parse(raw.toString('utf8')) as T;
  } catch {
    return undefined;
  }
}

async function gcLockActive(store: Store): Promise<LockBody | undefined> {
  const l = await readLock<LockBody>(store, GC_LOCK_KEY);
  return l && l.expires > Date.now() ? l : undefined;
}

export interface Lease {
  release(): Promise<void>;
}

/** Take a push lease over `chunks`, waiting out a running GC. No-op on stores without deletion. */
export async function acquirePushLease(store: Store, chunks: Digest[], t: LockTimings = {}): Promise<Lease> {
  if (!isPruneDriver(store.driver)) return { release: async () => {} };
  const ttl = t.ttlMs ?? 3_600_000;
  const deadline = Date.now() + (t.waitMs ?? 1_800_000);
  const key = `${LEASE_PREFIX}${randomUUID()}`;
  const body = (): Buffer =>
    Buffer.from(JSON.stringify({ holder: defaultActor(), created: new Date().toISOString(), expires: Date.now() + ttl, chunks } satisfies LeaseBody));
  for (;;) {
    await store.writer.put(key, body());
    const gc = await gcLockActive(store);
    if (!gc) break;
    await store.pruner.delete(key);
    if (Date.now() > deadline) {
      throw new KkError('LOCKED', `garbage collection by ${gc.holder} is running on this store`, { hint: 'retry when it has finished' });
    }
    await new Promise((r) => setTimeout(r, t.pollMs ?? 250));
  }
  // Long pushes refresh their lease so GC keeps honouring it.
  const timer = setInterval(() => void store.writer.put(key, body()).catch(() => {}), Math.max(1000, ttl / 3));
  timer.unref();
  return {
    async release() {
      clearInterval(timer);
      await store.pruner.delete(key);
    },
  };
}

export interface GcLock {
  /** Chunks that in-flight pushes rely on: GC must keep them. */
  leasedChunks: Set<Digest>;
  release(): Promise<void>;
}

/** Take the store-wide GC lock (LOCKED if another GC holds it) and collect live leases. */
export async function acquireGcLock(store: Store, t: LockTimings = {}): Promise<GcLock> {
  const ttl = t.ttlMs ?? 3_600_000;
  const body = Buffer.from(JSON.stringify({ holder: defaultActor(), created: new Date().toISOString(), expires: Date.now() + ttl } satisfies LockBody));
  let created = await store.writer.putIfAbsent(GC_LOCK_KEY, body);
  if (!created) {
    const held = await gcLockActive(store);
    if (held) throw new KkError('LOCKED', `garbage collection by ${held.holder} is already running`, { hint: 'wait for it, or remove locks/gc if that process is gone' });
    await store.pruner.delete(GC_LOCK_KEY);
    created = await store.writer.putIfAbsent(GC_LOCK_KEY, body);
    if (!created) throw new KkError('LOCKED', 'another garbage collection started at the same moment');
  }
  const leasedChunks = new Set<Digest>();
  for await (const o of store.driver.list(LEASE_PREFIX)) {
    const lease = await readLock<LeaseBody>(store, o.key);
    if (lease && lease.expires > Date.now()) for (const d of lease.chunks) leasedChunks.add(d);
  }
  return { leasedChunks, release: () => store.pruner.delete(GC_LOCK_KEY) };
}
