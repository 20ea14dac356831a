// The core Store over the in-memory driver: names, refs, channels, resolution, errors.
import { describe, expect, it } from 'vitest';
import { KkError, MANIFEST_FORMAT, Store, chunkingFor, createMemoryDriver, withConcurrencyLimit, withRetry, type Manifest, type ReadDriver } from '@kk/core';

const m = (version: string, content = 'x'): Manifest => ({
  format: MANIFEST_FORMAT,
  project: 'p',
  app: 'a',
  version,
  created: new Date().toISOString(),
  builder: 't',
  git_commit: '',
  meta: {},
  chunking: chunkingFor(),
  dirs: [],
  files: [{ path: content, size: 0, mode: 0o644, mtime: 0, sha256: 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' }],
});

describe('Store', () => {
  it('refuses to open a missing store unless creating, and creates one exactly once', async () => {
    const d = createMemoryDriver();
    await expect(Store.open(d)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const [a, b] = await Promise.all([Store.open(d, { create: true, avgChunkSize: 1 << 20 }), Store.open(d, { create: true })]);
    expect(a.config).toEqual(b.config);
  });

  it('writes refs create-if-absent: same manifest is idempotent, a different one VERSION_EXISTS', async () => {
    const s = await Store.open(createMemoryDriver(), { create: true });
    const d1 = await s.putManifest(m('1'));
    const d2 = await s.putManifest(m('1', 'y'));
    expect(await s.putRef('p', 'a', '1', d1)).toBe('created');
    expect(await s.putRef('p', 'a', '1', d1)).toBe('unchanged');
    await expect(s.putRef('p', 'a', '1', d2)).rejects.toMatchObject({ code: 'VERSION_EXISTS' });
    expect((await s.getRef('p', 'a', '1'))?.manifest).toBe(d1);
  });

  it('lists newest first and resolves latest, versions and channels', async () => {
    const s = await Store.open(createMemoryDriver(), { create: true });
    for (const [i, v] of ['1.0', '1.1', '2.0'].entries()) {
      await s.putRef('p', 'a', v, await s.putManifest(m(v)), 'ci', new Date(Date.UTC(2025, 0, i + 1)).toISOString());
    }
    expect((await s.listVersions('p', 'a')).map((v) => v.version)).toEqual(['2.0', '1.1', '1.0']);
    expect((await s.resolveVersion('p', 'a', 'latest')).version).toBe('2.0');
    await s.setChannel('p', 'a', 'promoted', '1.1');
    const ch = await s.setChannel('p', 'a', 'promoted', '1.0');
    expect(ch.history.map((h) => h.version)).toEqual(['1.1']);
    expect((await s.resolveVersion('p', 'a', 'promoted')).version).toBe('1.0');
    await expect(s.resolveVersion('p', 'a', 'nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await s.listProjects()).toEqual(['p']);
    expect(await s.listApps('p')).toEqual(['a']);
  });

  it('validates names before any I/O', async () => {
    let calls = 0;
    const inner = createMemoryDriver();
    const counting: ReadDriver = { ...inner, get: async (k, r) => (calls++, inner.get(k, r)) };
    await inner.put('kk-store.json', Buffer.from(JSON.stringify({ format: 'kk-store/1', chunking: chunkingFor(), created: '' })));
    const s = await Store.open(counting);
    calls = 0;
    for (const bad of [['P', 'a', '1'], ['p', '../a', '1'], ['p', 'a', '../1'], ['p', 'a', '']] as const) {
      await expect(s.getRef(...bad)).rejects.toBeInstanceOf(KkError);
    }
    expect(calls).toBe(0);
  });

  it('maps driver failures to BACKEND, and the retry wrapper retries them', async () => {
    const inner = createMemoryDriver();
    await inner.put('kk-store.json', Buffer.from(JSON.stringify({ format: 'kk-store/1', chunking: chunkingFor(), created: '' })));
    let failures = 2;
    const flaky = { ...inner, get: async (k: string) => { if (failures-- > 0) throw Object.assign(new Error('reset'), { code: 'ECONNRESET' }); return inner.get(k); } };
    await expect(Store.open(flaky)).rejects.toMatchObject({ code: 'BACKEND' });
    failures = 2;
    const s = await Store.open(withRetry(flaky, { baseMs: 1 }));
    expect(s.config.format).toBe('kk-store/1');
  });

  it('limits concurrency', async () => {
    const inner = createMemoryDriver();
    let active = 0;
    let peak = 0;
    const slow = { ...inner, stat: async (k: string) => { active++; peak = Math.max(peak, active); await new Promise((r) => setTimeout(r, 5)); active--; return inner.stat(k); } };
    const limited = withConcurrencyLimit(slow, 3);
    await Promise.all(Array.from({ length: 20 }, (_, i) => limited.stat(`k${i}`)));
    expect(peak).toBe(3);
  });
});
