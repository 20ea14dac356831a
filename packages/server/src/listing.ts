// Projects, apps and versions with their creation times (seed 6.1: "sorted by creation time").
// A version's time is its ref's `created`; a project's or app's is recorded once, when the
// server sees its first version (server/index/...), and derived from its refs for stores
// written without the server. Every listing asks the store which names exist, so instances
// sharing a store agree at once; only immutable data (creation times, refs) is cached.
import { type Store, type VersionInfo, forEachLimit } from '@kk/core';
import type { AppItem, ChannelItem, ListingApi, ProjectItem, ServerContext, VersionItem } from './context.js';

export type { AppItem, ChannelItem, ProjectItem, VersionItem };

const projectIndex = (p: string) => `server/index/projects/${p}`;
const appIndex = (p: string, a: string) => `server/index/apps/${p}/${a}`;

export class Listing implements ListingApi {
  private readonly store: Store;

  constructor(private readonly srv: ServerContext) {
    this.store = srv.store;
  }

  /** Projects with versions, read fresh (one listing); creation times come from the cache. */
  async projects(): Promise<ProjectItem[]> {
    const names = await this.store.listProjects();
    const out: ProjectItem[] = [];
    await forEachLimit(names, 32, async (name) => {
      const created = await this.projectCreated(name);
      if (created) out.push({ name, created });
    });
    return out;
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
