// Retention (DESIGN 8): keep the newest N versions of an app by creation time, and never a
// version a channel points to. Deletes refs only; chunk GC reclaims the bytes later.
import { assertAppName, assertProjectName } from './names.js';
import type { Store } from './store.js';

export interface RetentionDecision {
  version: string;
  created: string;
  action: 'keep' | 'delete';
  reason: string;
}

export interface RetentionResult {
  project: string;
  app: string;
  keep: number;
  decisions: RetentionDecision[];
  deleted: string[];
  dryRun: boolean;
}

export interface RetentionOptions {
  store: Store;
  project: string;
  app: string;
  /** Versions to keep (the newest N). */
  keep: number;
  dryRun?: boolean;
}

export async function applyRetention(opts: RetentionOptions): Promise<RetentionResult> {
  const { store, project, app, keep } = opts;
  assertProjectName(project);
  assertAppName(app);
  if (!Number.isInteger(keep) || keep < 1) throw new TypeError('keep must be an integer >= 1');
  const versions = await store.listVersions(project, app);
  const pinned = new Map<string, string>();
  for (const ch of await store.listChannels(project, app)) {
    const c = await store.getChannel(project, app, ch);
    if (c) pinned.set(c.version, ch);
  }
  const decisions: RetentionDecision[] = versions.map((v, i) => {
    const channel = pinned.get(v.version);
    if (i < keep) return { version: v.version, created: v.created, action: 'keep', reason: `among the newest ${keep}` };
    if (channel) return { version: v.version, created: v.created, action: 'keep', reason: `channel "${channel}" points to it` };
    return { version: v.version, created: v.created, action: 'delete', reason: `older than the newest ${keep}` };
  });
  const deleted = decisions.filter((d) => d.action === 'delete').map((d) => d.version);
  if (!opts.dryRun) for (const v of deleted) await store.deleteRef(project, app, v);
  return { project, app, keep, decisions, deleted, dryRun: !!opts.dryRun };
}

/** Retention over every app of every project (the server's nightly run). */
export async function applyRetentionAll(opts: { store: Store; keep: number; dryRun?: boolean }): Promise<RetentionResult[]> {
  const out: RetentionResult[] = [];
  for (const project of await opts.store.listProjects()) {
    for (const app of await opts.store.listApps(project)) {
      out.push(await applyRetention({ ...opts, project, app }));
    }
  }
  return out;
}
