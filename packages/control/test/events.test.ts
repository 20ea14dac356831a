import { expect, it } from 'vitest';
import type { StoredEvent } from '../src/index.js';
import { describeDialects, parallel } from './dialects.js';

describeDialects('events', (ctx) => {
  it('every activity appends one event with an increasing seq; since-paging returns them in order', async () => {
    const c = await ctx.open();
    expect(await c.events.current()).toBe(0);
    const seqs: number[] = [];
    for (const action of ['push', 'pull', 'promote', 'rollback', 'delete', 'token.create', 'token.revoke', 'webhook.create']) {
      seqs.push((await c.activity({ action, token: 't', project: 'web', app: 'site', version: '1' })).seq);
    }
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(await c.events.current()).toBe(seqs.at(-1));
    const p1 = await c.events.since(0, 3);
    expect(p1.items.map((e) => e.type)).toEqual(['push', 'pull', 'promote']);
    expect(p1).toMatchObject({ more: true, next_since: seqs[2], seq: seqs.at(-1) });
    const p2 = await c.events.since(p1.next_since, 100);
    expect(p2.items.map((e) => e.type)).toEqual(['rollback', 'delete', 'token.create', 'token.revoke', 'webhook.create']);
    expect(p2).toMatchObject({ more: false, next_since: seqs.at(-1) });
    expect((await c.events.since(p2.next_since, 100)).items).toEqual([]);
    expect((await c.events.since(0, 100, { type: 'pull' })).items.map((e) => e.seq)).toEqual([seqs[1]]);
  });

  it('concurrent writers through two instances: no duplicate seq, and a watcher misses nothing', async () => {
    const url = await ctx.freshUrl();
    const a = await ctx.open(url);
    const b = await ctx.open(url);
    const seen: StoredEvent[] = [];
    let since = 0;
    let writing = true;
    const watcher = (async () => {
      for (let i = 0; i < 10_000 && (writing || since < (await a.events.current())); i++) {
        const page = await a.events.since(since, 7);
        seen.push(...page.items);
        since = page.next_since;
        if (!page.items.length) await new Promise((r) => setTimeout(r, 2));
      }
    })();
    await parallel(120, 12, (i) => (i % 2 ? a : b).activity({ action: 'push', token: 't', project: 'p', app: `a${i % 5}`, version: String(i) }));
    writing = false;
    await watcher;
    expect(seen).toHaveLength(120);
    const seqs = seen.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    expect(new Set(seen.map((e) => e.version)).size).toBe(120);
  });

  it('scope filters restrict to one project and its apps', async () => {
    const c = await ctx.open();
    await c.activity({ action: 'push', token: 't', project: 'web', app: 'site' });
    await c.activity({ action: 'push', token: 't', project: 'web', app: 'api' });
    await c.activity({ action: 'push', token: 't', project: 'ops', app: 'site' });
    await c.activity({ action: 'token.create', token: 't' });
    expect((await c.events.since(0, 10, { visible: { project: 'web' } })).items.map((e) => e.app)).toEqual(['site', 'api']);
    expect((await c.events.since(0, 10, { visible: { project: 'web', apps: ['api'] } })).items.map((e) => e.app)).toEqual(['api']);
    expect((await c.events.since(0, 10)).items).toHaveLength(4);
  });
});
