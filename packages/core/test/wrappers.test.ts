// Seed 004's store wrappers: a request-rate limit on reads, and a list of stores tried in order.
import { describe, expect, it } from 'vitest';
import { type Driver, KkError, withFallback, withRateLimit } from '../src/index.js';
import { createMemoryDriver } from '../src/drivers/memory.js';

/** A memory driver that counts reads and can be switched into an outage (BACKEND errors). */
function flaky(): { driver: Driver; reads: number; down: boolean } {
  const inner = createMemoryDriver();
  const state = { driver: inner as Driver, reads: 0, down: false };
  state.driver = {
    ...inner,
    name: 'flaky',
    capabilities: inner.capabilities,
    get: async (key, range) => {
      state.reads++;
      if (state.down) throw new KkError('BACKEND', 'store is down');
      return inner.get(key, range);
    },
    list: (p) => inner.list(p),
    close: () => inner.close(),
  } as Driver;
  return state;
}

describe('withRateLimit', () => {
  it('lets no more reads through than the rate allows (upper bound: the bucket plus the rate times the time taken), and every read completes', async () => {
    const f = flaky();
    await (f.driver as unknown as { put(k: string, d: Uint8Array): Promise<void> }).put('k', Buffer.from('v'));
    const limited = withRateLimit(f.driver, 20);
    const started = Date.now();
    let doneBy1s = -1;
    const timer = setTimeout(() => (doneBy1s = f.reads), 1000);
    const results = await Promise.all(Array.from({ length: 50 }, () => limited.get('k')));
    clearTimeout(timer);
    const seconds = (Date.now() - started) / 1000;
    expect(results.every((r) => r?.toString() === 'v')).toBe(true);
    expect(f.reads).toBe(50);
    // 50 reads at 20/s with a 20-token bucket need at least 1.5 s, however fast the machine.
    expect(seconds).toBeGreaterThanOrEqual(1.4);
    if (doneBy1s >= 0) expect(doneBy1s).toBeLessThanOrEqual(20 + 20 * 1.1);
  });
});

describe('withFallback', () => {
  it('switches to the next store on an outage, once, and stays there; answers such as "absent" are not outages', async () => {
    const a = flaky();
    const b = flaky();
    for (const s of [a, b]) await (s.driver as unknown as { put(k: string, d: Uint8Array): Promise<void> }).put('k', Buffer.from('same'));
    const seen: string[] = [];
    const d = withFallback([{ label: 'server', driver: a.driver }, { label: 'bucket', driver: b.driver }], (e) => seen.push(`${e.from}->${e.to}`));
    expect((await d.get('k'))?.toString()).toBe('same');
    expect(await d.get('missing')).toBeUndefined();
    expect(d.events).toEqual([]);
    a.down = true;
    const before = a.reads;
    const got = await Promise.all(Array.from({ length: 5 }, () => d.get('k')));
    expect(got.map((g) => g?.toString())).toEqual(Array(5).fill('same'));
    expect(d.events).toEqual([{ from: 'server', to: 'bucket', reason: 'store is down' }]);
    expect(seen).toEqual(['server->bucket']);
    await d.get('k');
    expect(a.reads - before).toBeLessThanOrEqual(5);
    b.down = true;
    await expect(d.get('k')).rejects.toThrow(/store is down/);
  });
});
