import { expect, it } from 'vitest';
import { describeDialects } from './dialects.js';

describeDialects('audit', (ctx) => {
  it('records every field and reads it back newest first', async () => {
    const c = await ctx.open();
    const e = await c.audit.record({ action: 'push', token: 't1', agent: 'ci-1', address: '10.0.0.1', project: 'web', app: 'site', version: '1.0.0', manifest: 'sha256:ab', details: { files: 3 } });
    expect(e.id).toMatch(/^\d{13}-\d{6}-[0-9a-f]{8}$/);
    await c.audit.record({ action: 'pull', token: 't2', project: 'web', app: 'site', version: '1.0.0' });
    const r = await c.audit.query({}, { limit: 10, offset: 0, order: 'desc' });
    expect(r.items.map((x) => x.action)).toEqual(['pull', 'push']);
    expect(r.items[1]).toEqual(e);
    expect(r).toMatchObject({ total: 2, next_offset: null, next_cursor: null, order: 'desc' });
  });

  it('filters by action, project, app, version, token, agent, since and until, with total', async () => {
    const c = await ctx.open();
    const base = Date.parse('2026-01-01T00:00:00Z');
    for (let i = 0; i < 40; i++) {
      await c.audit.record({
        time: new Date(base + i * 60_000).toISOString(),
        action: i % 4 === 0 ? 'push' : 'pull',
        token: `t${i % 3}`,
        agent: `agent-${i % 2}`,
        project: i % 5 === 0 ? 'ops' : 'web',
        app: `a${i % 2}`,
        version: `v${i % 10}`,
      });
    }
    const q = (f: Parameters<typeof c.audit.query>[0]) => c.audit.query(f, { limit: 500, offset: 0, order: 'asc' });
    const all = (await q({})).items;
    const check = async (f: Parameters<typeof c.audit.query>[0], pred: (e: (typeof all)[number]) => boolean) => {
      const r = await q(f);
      const want = all.filter(pred);
      expect(want.length).toBeGreaterThan(0);
      expect(r.items).toEqual(want);
      expect(r.total).toBe(want.length);
    };
    await check({ action: 'push' }, (e) => e.action === 'push');
    await check({ project: 'ops' }, (e) => e.project === 'ops');
    await check({ project: 'web', app: 'a1' }, (e) => e.project === 'web' && e.app === 'a1');
    await check({ version: 'v3' }, (e) => e.version === 'v3');
    await check({ token: 't2', agent: 'agent-0' }, (e) => e.token === 't2' && e.agent === 'agent-0');
    const since = new Date(base + 10 * 60_000).toISOString();
    const until = new Date(base + 20 * 60_000).toISOString();
    await check({ since, until }, (e) => e.time >= since && e.time <= until);
    await check({ visible: { project: 'web', apps: ['a0'] } }, (e) => e.project === 'web' && e.app === 'a0');
  });

  it('cursor pages cover everything exactly once, even while rows are added', async () => {
    const c = await ctx.open();
    for (let i = 0; i < 23; i++) await c.audit.record({ action: 'push', token: 't', project: 'web', app: 'site', version: String(i) });
    const got: string[] = [];
    let cursor: number | undefined;
    let first = true;
    for (let i = 0; i < 20; i++) {
      const page = await c.audit.query({ project: 'web' }, { limit: 5, offset: 0, order: 'desc', ...(cursor === undefined ? {} : { cursor }) });
      got.push(...page.items.map((e) => e.version!));
      if (first) {
        // Rows added after the first page do not shift the following pages.
        await c.audit.record({ action: 'push', token: 't', project: 'web', app: 'site', version: 'late' });
        first = false;
      }
      if (page.next_cursor === null) break;
      cursor = page.next_cursor;
    }
    expect(got).toEqual(Array.from({ length: 23 }, (_, i) => String(22 - i)));
    // Offset pages keep the original API's shape.
    const off = await c.audit.query({}, { limit: 10, offset: 20, order: 'asc' });
    expect(off.items.map((e) => e.version)).toEqual(['20', '21', '22', 'late']);
    expect(off).toMatchObject({ offset: 20, next_offset: null, total: 24 });
    const mid = await c.audit.query({}, { limit: 10, offset: 5, order: 'asc' });
    expect(mid.next_offset).toBe(15);
  });
});
