import { expect, it } from 'vitest';
import type { FileEntry } from '@kk/core';
import { describeDialects } from './dialects.js';

const entry = (path: string): FileEntry => ({ path, size: 3, mode: 0o644, mtime: 0, digest: `sha256:${'a'.repeat(64)}`, chunks: [] }) as unknown as FileEntry;

describeDialects('upload sessions', (ctx) => {
  it('open, resume, record files, find by id, discard', async () => {
    const url = await ctx.freshUrl();
    const a = await ctx.open(url);
    const b = await ctx.open(url);
    const decl = [{ path: 'a.txt', size: 3, sha256: `sha256:${'1'.repeat(64)}` as const }];
    const { session, resumed } = await a.uploads.open('web', 'site', '1.0.0', 'tok', 60_000, { builder: 'ci', declared: decl });
    expect(resumed).toBe(false);
    expect(session.id).toMatch(/^up-[0-9a-f]{24}$/);
    // Another instance resumes the same session and merges declarations.
    const again = await b.uploads.open('web', 'site', '1.0.0', 'tok', 60_000, { declared: [...decl, { path: 'b.txt', size: 1, sha256: `sha256:${'2'.repeat(64)}` }], git_commit: 'abc' });
    expect(again.resumed).toBe(true);
    expect(again.session.id).toBe(session.id);
    expect(again.session.declared.map((d) => d.path)).toEqual(['a.txt', 'b.txt']);
    expect(await a.uploads.byId(session.id)).toMatchObject({ builder: 'ci', git_commit: 'abc', declared: again.session.declared });
    await a.uploads.putFile(session, entry('a.txt'));
    await b.uploads.putFile(session, entry('b.txt'));
    await b.uploads.putFile(session, { ...entry('b.txt'), size: 9 } as FileEntry);
    expect((await a.uploads.getFile(session, 'b.txt'))?.size).toBe(9);
    expect((await a.uploads.files(session)).map((f) => f.path)).toEqual(['a.txt', 'b.txt']);
    await a.uploads.discard(session);
    expect(await b.uploads.get('web', 'site', '1.0.0')).toBeUndefined();
    expect(await b.uploads.byId(session.id)).toBeUndefined();
    const left = await a.cdb.db.selectFrom('upload_files').selectAll().execute();
    expect(left).toEqual([]);
  });

  it('expired sessions are invisible, replaced on open, and dropped by expire()', async () => {
    const c = await ctx.open();
    const old = await c.uploads.open('web', 'site', '1', 'tok', 1);
    await c.uploads.putFile(old.session, entry('x'));
    await new Promise((r) => setTimeout(r, 10));
    expect(await c.uploads.get('web', 'site', '1')).toBeUndefined();
    const fresh = await c.uploads.open('web', 'site', '1', 'tok', 60_000);
    expect(fresh.resumed).toBe(false);
    expect(fresh.session.id).not.toBe(old.session.id);
    expect(await c.uploads.files(fresh.session)).toEqual([]);
    await c.uploads.open('web', 'site', '2', 'tok', 1);
    await new Promise((r) => setTimeout(r, 10));
    expect(await c.uploads.expire()).toBe(1);
    expect(await c.uploads.get('web', 'site', '1')).toBeDefined();
  });
});
