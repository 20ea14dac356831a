import { isKkError } from '@kk/core';
import { expect, it } from 'vitest';
import { type Principal, parseScope } from '../src/index.js';
import { describeDialects } from './dialects.js';

async function authErr(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isKkError(err, 'AUTH')).toBe(true);
  return (err as Error).message;
}

describeDialects('tokens', (ctx) => {
  it('records when a token was last used, at most once a minute', async () => {
    const c = await ctx.open();
    const { token, record } = await c.tokens.mint({ name: 'used', scope: parseScope('global'), permissions: ['pull'] }, 'admin');
    expect((await c.tokens.get(record.id))!.last_used).toBeNull();
    const before = Date.now();
    await c.tokens.authenticate(`Bearer ${token}`);
    let first: string | null | undefined;
    for (let i = 0; i < 100 && !first; i++) {
      first = (await c.tokens.get(record.id))!.last_used;
      if (!first) await new Promise((r) => setTimeout(r, 20));
    }
    expect(Date.parse(first!)).toBeGreaterThanOrEqual(before - 1000);
    // A second use within the minute writes nothing.
    await c.tokens.authenticate(`Bearer ${token}`);
    await new Promise((r) => setTimeout(r, 100));
    expect((await c.tokens.get(record.id))!.last_used).toBe(first);
  });

  it('store only the hash; the secret authenticates, a wrong one does not', async () => {
    const c = await ctx.open();
    const { token, record } = await c.tokens.mint({ name: 'ci', scope: parseScope('project:web'), permissions: ['pull', 'push'] }, 'admin');
    const secret = token.split('_')[2]!;
    const row = await c.cdb.db.selectFrom('tokens').selectAll().where('id', '=', record.id).executeTakeFirstOrThrow();
    expect(JSON.stringify(row)).not.toContain(secret);
    expect(row.hash).toMatch(/^sha256:[0-9a-f]{64}$/);
    const p = await c.tokens.authenticate(`Bearer ${token}`);
    expect(p).toMatchObject({ tokenId: record.id, name: 'ci', scope: { kind: 'project', project: 'web' } });
    expect([...p.permissions]).toEqual(['pull', 'push']);
    expect(await authErr(c.tokens.authenticate(`Bearer ${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`))).toBe('invalid token');
    expect(await authErr(c.tokens.authenticate(undefined))).toBe('missing bearer token');
    expect(await authErr(c.tokens.authenticate('Bearer kk_00000000000000000000_' + 'x'.repeat(43)))).toBe('invalid token');
  });

  it('a revocation through one instance is refused by another on the next request', async () => {
    const url = await ctx.freshUrl();
    const a = await ctx.open(url);
    const b = await ctx.open(url);
    const { token, record } = await a.tokens.mint({ scope: { kind: 'global' }, permissions: ['pull'] }, 'admin');
    expect((await b.tokens.authenticate(`Bearer ${token}`)).tokenId).toBe(record.id);
    const revoked = await a.tokens.revoke(record.id);
    expect(revoked?.revoked).toBeTruthy();
    expect(await authErr(b.tokens.authenticate(`Bearer ${token}`))).toBe('the token has been revoked');
    // Revoking again keeps the first time.
    expect((await b.tokens.revoke(record.id))?.revoked).toBe(revoked!.revoked);
    expect(await a.tokens.revoke('ffffffffffffffffffff')).toBeUndefined();
  });

  it('an expired token is refused; the preset admin token works without a row', async () => {
    const c = await ctx.open(undefined, { adminToken: 'preset-admin-secret' });
    const { token } = await c.tokens.mint({ scope: { kind: 'global' }, permissions: ['pull'], expires: Date.now() - 1 }, 'admin');
    expect(await authErr(c.tokens.authenticate(`Bearer ${token}`))).toBe('the token has expired');
    const admin = await c.tokens.authenticate('Bearer preset-admin-secret');
    expect(admin.tokenId).toBe('admin');
    expect(await c.tokens.any()).toBe(true);
  });

  it('a token cannot mint a token with more rights than itself', async () => {
    const c = await ctx.open();
    const caller: Principal = { tokenId: 'x', name: '', scope: parseScope('project:web'), permissions: new Set(['admin']), expires: Date.now() + 60_000 };
    const refused = (req: Parameters<typeof c.tokens.checkMint>[1]) => {
      try {
        c.tokens.checkMint(caller, req);
        return undefined;
      } catch (e) {
        return isKkError(e, 'FORBIDDEN') ? (e as Error).message : String(e);
      }
    };
    expect(refused({ scope: parseScope('global'), permissions: ['pull'], expires: Date.now() + 1000 })).toMatch(/wider/);
    expect(refused({ scope: parseScope('app:web/site'), permissions: ['pull'] })).toMatch(/expire no later/);
    expect(refused({ scope: parseScope('app:web/site'), permissions: ['pull'], expires: Date.now() + 1000 })).toBeUndefined();
    const pusher: Principal = { ...caller, permissions: new Set(['push']) };
    expect(() => c.tokens.checkMint(pusher, { scope: parseScope('project:web'), permissions: ['push'] })).toThrow(/admin permission/);
  });

  it('list returns every token oldest first', async () => {
    const c = await ctx.open();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await c.tokens.mint({ name: `t${i}`, scope: { kind: 'global' }, permissions: ['pull'] }, 'admin')).record.id);
      await new Promise((r) => setTimeout(r, 2));
    }
    expect((await c.tokens.list()).map((t) => t.id)).toEqual(ids);
    const one = await c.tokens.get(ids[2]!);
    expect(one).toMatchObject({ name: 't2', permissions: ['pull'], scope: 'global', revoked: null, created_by: 'admin' });
  });
});
