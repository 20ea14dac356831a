// The sorted project list each instance keeps (issue 17, seed 10.3: 2000+ projects): pages cut
// from it match a full sort both ways, it follows pushes and deletes made through another
// instance on the next listing, and a cold start takes the times from the one snapshot object.
import { readFile, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { startServer, type RunningServer } from '../src/index.js';
import { call, httpStore, publishAt, startTestServer, waitFor, type TestServer } from './helpers.js';

let a: TestServer;
let b: RunningServer;
beforeAll(async () => {
  a = await startTestServer();
  b = await startServer({ store: a.storeDir, db: a.db, listen: '127.0.0.1:0', adminToken: a.admin, log: false, config: { hasherThreads: 1 } });
});
afterAll(async () => {
  await b.close();
  await a.cleanup();
});

interface Item {
  name: string;
  created: string;
}
const list = async (base: string, query: string): Promise<{ items: Item[]; total: number; next_offset: number | null }> => {
  const r = await call(base, 'GET', `/api/v1/projects?${query}`, { token: a.admin });
  expect(r.status).toBe(200);
  return r.json();
};
/** Every project by walking the pages (as the UI's virtual list does). */
const walk = async (base: string, order: 'asc' | 'desc', limit: number, q = ''): Promise<string[]> => {
  const out: string[] = [];
  let offset: number | null = 0;
  for (let i = 0; offset !== null && i < 100; i++) {
    const page = await list(base, `order=${order}&limit=${limit}&offset=${offset}${q ? `&q=${encodeURIComponent(q)}` : ''}`);
    out.push(...page.items.map((p) => p.name));
    offset = page.next_offset;
  }
  return out;
};
const sortedNames = (xs: Item[], order: 'asc' | 'desc'): string[] => {
  const dir = order === 'asc' ? 1 : -1;
  return [...xs].sort((x, y) => (x.created !== y.created ? (x.created < y.created ? -dir : dir) : x.name < y.name ? -dir : dir)).map((x) => x.name);
};
const indexOf = (storeDir: string, project: string): Promise<string> => readFile(path.join(storeDir, 'server', 'index', 'projects', project), 'utf8');

describe('the sorted project list', () => {
  // Out of name order, with two ties on the creation time (ordered by name).
  const made: Item[] = ['m', 'c', 'x', 'a', 'k', 'b', 'z', 'e', 'q', 'd', 'f', 'y'].map((s, i) => ({ name: `lst-${s}`, created: `2025-0${1 + (i % 9)}-0${1 + (i % 3)}T00:00:00.000Z` }));

  beforeAll(async () => {
    const store = await httpStore(a);
    for (const p of made) await publishAt(store, p.name, 'web', 'v1', p.created);
    await store.driver.close();
  });

  it('pages of any size, both orders, equal a full sort of every project by (created, name)', async () => {
    for (const base of [a.url, b.url]) {
      for (const order of ['asc', 'desc'] as const) {
        const all = await list(base, `order=${order}&limit=500`);
        expect(all.total).toBe(made.length);
        expect(all.items.map((p) => p.name)).toEqual(sortedNames(made, order));
        expect(all.items).toEqual(sortedNames(made, order).map((n) => made.find((m) => m.name === n)));
        for (const limit of [1, 5, 7]) expect(await walk(base, order, limit)).toEqual(sortedNames(made, order));
      }
    }
    const past = await list(b.url, 'order=desc&limit=5&offset=50');
    expect(past).toMatchObject({ items: [], total: made.length, next_offset: null });
    expect((await list(b.url, 'sort=-created&limit=2')).items.map((p) => p.name)).toEqual(sortedNames(made, 'desc').slice(0, 2));
  });

  it('search is server-side over the sorted list, case-insensitive, and pages the matches', async () => {
    expect(await walk(b.url, 'asc', 2, 'LST-')).toEqual(sortedNames(made, 'asc'));
    const q = await list(b.url, 'q=st-d&order=asc');
    expect(q.items.map((p) => p.name)).toEqual(['lst-d']);
    expect(q.total).toBe(1);
    expect((await list(b.url, 'q=no-such-project')).total).toBe(0);
  });

  it('a project pushed or deleted through one instance is in (or out of) the other\'s next listing', async () => {
    expect((await list(b.url, 'order=asc&limit=500')).total).toBe(made.length);
    const store = await httpStore(a);
    const middle = { name: 'lst-new', created: '2025-03-02T12:00:00.000Z' };
    await publishAt(store, middle.name, 'web', 'v1', middle.created);
    await store.driver.close();
    const withNew = [...made, middle];
    expect((await list(b.url, 'order=asc&limit=500')).items.map((p) => p.name)).toEqual(sortedNames(withNew, 'asc'));
    expect(await walk(b.url, 'desc', 3)).toEqual(sortedNames(withNew, 'desc'));

    const gone = made[3]!.name;
    expect((await call(a.url, 'DELETE', `/api/v1/projects/${gone}/apps/web/versions/v1`, { token: a.admin })).status).toBe(204);
    const left = withNew.filter((p) => p.name !== gone);
    expect((await list(b.url, 'order=asc&limit=500')).items.map((p) => p.name)).toEqual(sortedNames(left, 'asc'));
    expect((await list(a.url, 'order=desc&limit=500')).items.map((p) => p.name)).toEqual(sortedNames(left, 'desc'));
    expect((await call(b.url, 'GET', `/api/v1/projects/${gone}/apps`, { token: a.admin })).status).toBe(404);

    // Pushed again: back in its first-seen place (the index object is kept).
    const again = await httpStore(a);
    await publishAt(again, gone, 'web', 'v2', '2025-09-09T00:00:00.000Z');
    await again.driver.close();
    expect((await list(b.url, 'order=asc&limit=500')).items.map((p) => p.name)).toEqual(sortedNames(withNew, 'asc'));
  });

  it('a project written to the store behind the servers\' back shows within the name listing\'s 5 s reuse', async () => {
    const before = (await list(b.url, 'order=asc&limit=500')).total;
    const direct = await Store.open(createFileDriver({ root: a.storeDir }));
    await publishAt(direct, 'lst-direct', 'web', 'v1', '2025-12-31T00:00:00.000Z');
    await direct.driver.close();
    const after = await waitFor('the direct write listed', async () => {
      const page = await list(b.url, 'order=desc&limit=1');
      return page.total === before + 1 ? page : undefined;
    });
    expect(after.items).toEqual([{ name: 'lst-direct', created: '2025-12-31T00:00:00.000Z' }]);
    expect((await call(a.url, 'DELETE', '/api/v1/projects/lst-direct/apps/web/versions/v1', { token: a.admin })).status).toBe(204);
    expect((await list(b.url, 'order=asc&limit=500')).total).toBe(before);
  });

  it('the snapshot holds every project\'s first-seen time; a cold start takes times from it and completes it', async () => {
    const snap = path.join(a.storeDir, 'server', 'index', 'project-times');
    const doc = await waitFor('the project times snapshot', async () => {
      const d = JSON.parse(await readFile(snap, 'utf8').catch(() => '{}')) as { projects?: Record<string, string> };
      return d.projects && Object.keys(d.projects).length >= made.length ? d : undefined;
    });
    for (const p of made) expect(doc.projects![p.name]).toBe(JSON.parse(await indexOf(a.storeDir, p.name)).created);

    // A snapshot that lacks some projects, and (to see it is what a cold start reads) one whose
    // time there differs from its index object: the snapshot wins, the missing ones are read.
    const lacking = { [made[0]!.name]: '2020-01-01T00:00:00.000Z', [made[1]!.name]: doc.projects![made[1]!.name]! };
    await writeFile(snap, JSON.stringify({ projects: lacking }));
    const cold = await startServer({ store: a.storeDir, db: a.db, listen: '127.0.0.1:0', adminToken: a.admin, log: false, config: { hasherThreads: 1 } });
    try {
      const items = (await list(cold.url, 'order=asc&limit=500')).items;
      expect(items[0]).toEqual({ name: made[0]!.name, created: '2020-01-01T00:00:00.000Z' });
      expect(items.length).toBe(made.length + 1);
      const rest = items.slice(1);
      for (const p of rest) expect(p.created).toBe(JSON.parse(await indexOf(a.storeDir, p.name)).created);
      const completed = await waitFor('the snapshot completed', async () => {
        const d = JSON.parse(await readFile(snap, 'utf8')) as { projects: Record<string, string> };
        return Object.keys(d.projects).length === made.length + 1 ? d : undefined;
      });
      expect(completed.projects[made[0]!.name]).toBe('2020-01-01T00:00:00.000Z');
    } finally {
      await cold.close();
    }
    // Unreadable: ignored (each project's index object is read instead).
    await writeFile(snap, '{not json');
    const again = await startServer({ store: a.storeDir, db: a.db, listen: '127.0.0.1:0', adminToken: a.admin, log: false, config: { hasherThreads: 1 } });
    try {
      const items = (await list(again.url, 'order=asc&limit=500')).items;
      expect(items.map((p) => p.name).sort()).toEqual([...made.map((p) => p.name), 'lst-new'].sort());
      for (const p of items) expect(p.created).toBe(JSON.parse(await indexOf(a.storeDir, p.name)).created);
    } finally {
      await again.close();
    }
    await rm(snap, { force: true });
  });
});
