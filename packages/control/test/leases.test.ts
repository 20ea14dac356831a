import { expect, it } from 'vitest';
import { describeDialects, parallel } from './dialects.js';

describeDialects('cluster leases', (ctx) => {
  it('one holder at a time; renewal; release; takeover after expiry', async () => {
    const url = await ctx.freshUrl();
    const a = await ctx.open(url);
    const b = await ctx.open(url);
    const now = Date.now();
    expect(await a.leases.acquire('webhooks', 'A', 1_000, now)).toBe(true);
    expect(await b.leases.acquire('webhooks', 'B', 1_000, now + 10)).toBe(false);
    expect(await a.leases.acquire('webhooks', 'A', 1_000, now + 900)).toBe(true); // renew
    expect(await b.leases.acquire('webhooks', 'B', 1_000, now + 1_500)).toBe(false);
    expect(await b.leases.acquire('webhooks', 'B', 1_000, now + 1_901)).toBe(true); // A stopped renewing
    expect(await a.leases.acquire('webhooks', 'A', 1_000, now + 1_950)).toBe(false);
    await a.leases.release('webhooks', 'A'); // not A's: no effect
    expect((await a.leases.holder('webhooks', now + 1_950))?.owner).toBe('B');
    await b.leases.release('webhooks', 'B');
    expect(await a.leases.holder('webhooks')).toBeUndefined();
  });

  it('many instances racing for a scheduled slot: exactly one runs it', async () => {
    const url = await ctx.freshUrl();
    const instances = await Promise.all([ctx.open(url), ctx.open(url), ctx.open(url)]);
    let runs = 0;
    const results = await parallel(12, 12, (i) =>
      instances[i % 3]!.leases.runOnce('retention', '2026-01-01T03:00', `I${i}`, 60_000, async () => {
        runs++;
        await new Promise((r) => setTimeout(r, 50));
        return i;
      }),
    );
    expect(runs).toBe(1);
    expect(results.filter((r) => r.ran)).toHaveLength(1);
    const run = await instances[0]!.leases.run('retention', '2026-01-01T03:00');
    expect(run).toMatchObject({ state: 'done', attempts: 1 });
  });

  it('a run whose owner died mid-run is taken over once its lease lapses', async () => {
    const url = await ctx.freshUrl();
    const a = await ctx.open(url);
    const b = await ctx.open(url);
    const now = Date.now();
    expect(await a.leases.claimRun('retention', 's1', 'A', 1_000, now)).toBe(true); // A then "dies"
    expect(await b.leases.claimStale('retention', 'B', 1_000, 10, now + 500)).toEqual([]);
    expect(await b.leases.claimRun('retention', 's1', 'B', 1_000, now + 500)).toBe(false);
    expect(await b.leases.claimStale('retention', 'B', 1_000, 10, now + 1_001)).toEqual(['s1']);
    expect(await a.leases.claimStale('retention', 'A', 1_000, 10, now + 1_002)).toEqual([]);
    expect(await a.leases.finishRun('retention', 's1', 'A', true)).toBe(false); // A came back: too late
    expect(await b.leases.finishRun('retention', 's1', 'B', true)).toBe(true);
    expect(await b.leases.run('retention', 's1')).toMatchObject({ owner: 'B', state: 'done', attempts: 2 });
    expect(await b.leases.claimStale('retention', 'B', 1_000, 10, now + 10_000)).toEqual([]);
  });

  it('a live owner keeps its run by renewing', async () => {
    const c = await ctx.open();
    let stolen: string[] = [];
    const r = await c.leases.runOnce('retention', 's2', 'A', 300, async () => {
      await new Promise((res) => setTimeout(res, 700));
      stolen = await c.leases.claimStale('retention', 'B', 300);
      return 'ok';
    });
    expect(r).toEqual({ ran: true, result: 'ok' });
    expect(stolen).toEqual([]);
  });
});
