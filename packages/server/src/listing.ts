// Projects, apps and versions with their creation times (seed 6.1: "sorted by creation time").
// A version's time is its ref's `created`; a project's or app's is recorded once, when the
// server sees its first version (server/index/...), and derived from its refs for stores
// written without the server. Every listing of apps and versions asks the store which names
// exist, so instances sharing a store agree at once; only immutable data (creation times, refs)
// is cached.
//
// Projects (2000+, seed 10.3): each instance keeps the list sorted by creation time, keyed by
// the store's name listing. When the names are the same as last time a listing answers from the
// sorted list as it is; otherwise only the added names' times are read and merged in, the
// removed ones dropped. The names are re-listed (one listChildren) unless the control
// database's event seq is what it was at the last listing, this instance pushed nothing since,
// and that listing is under 5 s old: every push and delete through any instance sharing the
// control database records an event before it answers, so those show on the next listing at
// once; only refs written or deleted behind the servers' back (a store used directly, an event
// whose write failed) may take up to 5 s to show. A cold start reads the
// times from one snapshot object (server/index/project-times, rewritten at most once a minute
// by whichever instance read times one by one) and only the names it lacks one by one, 64 at
// a time. First-seen times are immutable and their index objects never deleted, so a snapshot
// is never wrong, only incomplete.
import { type Store, type VersionInfo, forEachLimit } from '@kk/core';
import type { AppItem, ChannelItem, ListingApi, ProjectItem, ServerContext, VersionItem } from './context.js';
import type { Page, Paged } from './http.js';

export type { AppItem, ChannelItem, ProjectItem, VersionItem };

const projectIndex = (p: string) => `server/index/projects/${p}`;
const appIndex = (p: string, a: string) => `server/index/apps/${p}/${a}`;
/** `{"projects":{"name":"created",...}}`: a cache of the per-project index objects, in one object. */
export const PROJECT_TIMES = 'server/index/project-times';
const SNAPSHOT_EVERY_MS = 60_000;
/** How long a name listing is reused while no event was recorded (writes behind the servers' back). */
const NAMES_TTL_MS = 5_000;
const COLD_READS = 64;

interface SortedProjects {
  /** The store's name listing this list was built from (sorted, as listChildren returns it). */
  names: readonly string[];
  /** Projects with a creation time, ascending by (created, name). */
  items: ProjectItem[];
}

const byCreated = (a: { name: string; created: string }, b: { name: string; created: string }): number =>
  a.created !== b.created ? (a.created < b.created ? -1 : 1) : a.name === b.name ? 0 : a.name < b.name ? -1 : 1;

const sameNames = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((n, i) => n === b[i]);

/** Merge two lists sorted by byCreated. */
function merge<T extends { name: string; created: string }>(a: T[], b: T[]): T[] {
  if (b.length === 0) return a;
  const out: T[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) out.push(byCreated(a[i]!, b[j]!) <= 0 ? a[i++]! : b[j++]!);
  while (i < a.length) out.push(a[i++]!);
  while (j < b.length) out.push(b[j++]!);
  return out;
}

/**
 * A page cut from a list already sorted ascending by (created, name): `order=desc` reads it from
 * the end (ties by name descending, as paginate() sorts them). No copy of the whole list, no sort.
 */
export function pageSorted<T>(sorted: readonly T[], page: Page): Paged<T> {
  const n = sorted.length;
  let items: T[];
  if (page.order === 'asc') items = sorted.slice(page.offset, page.offset + page.limit);
  else items = sorted.slice(Math.max(0, n - page.offset - page.limit), Math.max(0, n - page.offset)).reverse();
  const next = page.offset + items.length;
  return { items, total: n, limit: page.limit, offset: page.offset, order: page.order, next_offset: next < n ? next : null };
}

export class Listing implements ListingApi {
  private readonly store: Store;

  constructor(private readonly srv: ServerContext) {
    this.store = srv.store;
  }

  private sorted?: SortedProjects;
  private rebuilding?: { names: readonly string[]; done: Promise<SortedProjects> };
  private snapshot?: Promise<Map<string, string>>;
  private snapshotAt = 0;
  private snapshotWriting = false;
  private names?: { seq: number; pushes: number; at: number; names: readonly string[] };
  private pushes = 0;

  /**
   * Projects with versions, ascending by (created, name), from one fresh name listing. The array
   * is shared between calls: callers filter or slice it, never change it.
   */
  async projects(): Promise<ProjectItem[]> {
    const names = await this.projectNames();
    const cur = this.sorted;
    if (cur && sameNames(cur.names, names)) return cur.items;
    const r = this.rebuilding;
    if (r && sameNames(r.names, names)) return (await r.done).items;
    const done = this.rebuild(names, cur);
    this.rebuilding = { names, done };
    try {
      const next = await done;
      this.sorted = next;
      return next.items;
    } finally {
      if (this.rebuilding?.done === done) this.rebuilding = undefined;
    }
  }

  /** The store's project names: the last listing while nothing was recorded since (see the top). */
  private async projectNames(): Promise<readonly string[]> {
    // The seq is read before the listing: a push recorded after it makes the next call re-list.
    const seq = await this.srv.control.events.current().catch(() => undefined);
    const hit = this.names;
    if (hit && seq !== undefined && hit.seq === seq && hit.pushes === this.pushes && Date.now() - hit.at < NAMES_TTL_MS) return hit.names;
    const pushes = this.pushes;
    const at = Date.now();
    const names = await this.store.listProjects();
    this.names = seq === undefined ? undefined : { seq, pushes, at, names };
    return names;
  }

  private async rebuild(names: readonly string[], prev: SortedProjects | undefined): Promise<SortedProjects> {
    const wanted = new Set(names);
    const kept = prev ? prev.items.filter((p) => wanted.has(p.name)) : [];
    const known = new Set(kept.map((p) => p.name));
    const times = await this.loadSnapshot();
    const added: ProjectItem[] = [];
    let read = 0;
    await forEachLimit(
      names.filter((n) => !known.has(n)),
      COLD_READS,
      async (name) => {
        let created = times.get(name);
        if (!created) {
          created = await this.projectCreated(name);
          if (created) read++;
        }
        if (created) added.push({ name, created });
      },
    );
    const items = merge(kept, added.sort(byCreated));
    if (read > 0) this.saveSnapshot(times, items);
    return { names, items };
  }

  /** The snapshot of project times, read once per instance (missing or unreadable: empty). */
  private loadSnapshot(): Promise<Map<string, string>> {
    this.snapshot ??= (async () => {
      const times = new Map<string, string>();
      try {
        const raw = await this.store.driver.get(PROJECT_TIMES);
        const doc = raw ? (JSON.parse(raw.toString('utf8')) as { projects?: Record<string, unknown> }) : undefined;
        for (const [name, created] of Object.entries(doc?.projects ?? {})) if (typeof created === 'string') times.set(name, created);
      } catch (err) {
        this.srv.log.warn('project times snapshot not read; reading each project\'s index', { key: PROJECT_TIMES, err: String(err) });
      }
      return times;
    })();
    return this.snapshot;
  }

  /** Rewrite the snapshot with what this instance knows, at most once a minute, in the background. */
  private saveSnapshot(times: Map<string, string>, items: ProjectItem[]): void {
    if (this.snapshotWriting || Date.now() - this.snapshotAt < SNAPSHOT_EVERY_MS) return;
    this.snapshotWriting = true;
    this.snapshotAt = Date.now();
    for (const p of items) times.set(p.name, p.created);
    const body = Buffer.from(JSON.stringify({ projects: Object.fromEntries(times) }));
    this.store.writer
      .put(PROJECT_TIMES, body)
      .catch((err: unknown) => this.srv.log.warn('project times snapshot not written', { key: PROJECT_TIMES, err: String(err) }))
      .finally(() => {
        this.snapshotWriting = false;
      });
  }

  async apps(project: string): Promise<AppItem[]> {
    const names = await this.store.listApps(project);
    const out: AppItem[] = [];
    await forEachLimit(names, 32, async (name) => {
      const created = await this.appCreated(project, name);
      if (created) out.push({ project, name, created });
    });
    return out;
  }

  /**
   * The versions of an app, newest first, with the channels pointing at each. One listing per
   * call keeps it exact across instances; the refs behind an unchanged list of names come from
   * the cache (refs are immutable; the TTL bounds a name deleted and re-created elsewhere).
   */
  async versions(project: string, app: string): Promise<VersionItem[]> {
    const key = `versions:${project}/${app}`;
    const [names, channels] = await Promise.all([this.store.driver.listChildren(`refs/${project}/${app}/`), this.channels(project, app)]);
    let hit = this.srv.caches.listings.get(key) as { names: string[]; versions: VersionInfo[] } | undefined;
    if (!hit || hit.names.length !== names.length || hit.names.some((n, i) => n !== names[i])) {
      hit = { names, versions: await this.store.listVersions(project, app) };
      this.srv.caches.listings.set(key, hit);
    }
    return hit.versions.map((v) => ({ ...v, channels: channels.filter((c) => c.version === v.version).map((c) => c.name) }));
  }

  /** Channels are mutable and few: always read from the store. */
  async channels(project: string, app: string): Promise<{ name: string; version: string; manifest: string; updated: string; by: string }[]> {
    const names = await this.store.listChannels(project, app);
    const out: { name: string; version: string; manifest: string; updated: string; by: string }[] = [];
    await forEachLimit(names, 8, async (name) => {
      const c = await this.store.getChannel(project, app, name).catch(() => undefined);
      if (c) out.push({ name, version: c.version, manifest: c.manifest, updated: c.updated, by: c.by });
    });
    return out.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** Record first-seen times when a version is created through this server. */
  async noteVersion(project: string, app: string, created: string): Promise<void> {
    this.pushes++;
    const body = Buffer.from(JSON.stringify({ created }));
    await this.store.writer.putIfAbsent(projectIndex(project), body);
    await this.store.writer.putIfAbsent(appIndex(project, app), body);
  }

  private async appCreated(project: string, app: string): Promise<string | undefined> {
    return this.indexed(`${project}/${app}`, appIndex(project, app), async () => {
      const versions = await this.store.listVersions(project, app);
      return versions.length ? versions[versions.length - 1]!.created : undefined;
    });
  }

  private async projectCreated(project: string): Promise<string | undefined> {
    return this.indexed(project, projectIndex(project), async () => {
      let first: string | undefined;
      for (const app of await this.store.listApps(project)) {
        const c = await this.appCreated(project, app);
        if (c && (!first || c < first)) first = c;
      }
      return first;
    });
  }

  /** The creation time from memory, the index object, or (once) derived and written back. */
  private async indexed(cacheKey: string, key: string, derive: () => Promise<string | undefined>): Promise<string | undefined> {
    const hit = this.srv.caches.created.get(cacheKey);
    if (hit) return hit;
    const raw = await this.store.driver.get(key);
    let created = raw ? (JSON.parse(raw.toString('utf8')) as { created: string }).created : undefined;
    if (!created) {
      created = await derive();
      if (!created) return undefined;
      await this.store.writer.putIfAbsent(key, Buffer.from(JSON.stringify({ created })));
    }
    this.srv.caches.created.set(cacheKey, created);
    return created;
  }
}
