// The agent's local deploy journal (seed deploy-31): one JSON file per deploy, replaced
// atomically (write + fsync + rename) at every status change, holding the spec, the status
// history, what a rollback needs (the previous container, tree or version) and whether the
// final outcome has reached the server. A deploy interrupted by a crash is found here on restart.
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import * as path from 'node:path';
import type { DeployCallbackPayload, DeploySpec, DeployStatus, HealthCheckResult, RollbackResult, StatusEntry } from './types.js';

export interface JournalEntry {
  id: string;
  spec: DeploySpec;
  /** Set for a manual rollback of an earlier deploy (`deploy.rollback`). */
  rollback_of?: string;
  status: DeployStatus;
  progress: number;
  started: string;
  history: StatusEntry[];
  /** The kind's rollback state, saved before it changes anything. */
  saved: Record<string, unknown>;
  /** Where it is: doing the work, checking health after it, rolling back, or finished. */
  phase: 'apply' | 'health' | 'rollback' | 'done';
  /** The last log lines (bounded). */
  logs: string[];
  result: Record<string, unknown>;
  health_check?: HealthCheckResult;
  rollback?: RollbackResult;
  error?: string;
  error_code?: string;
  /** The version / image this deploy put there, marked bad when it failed. */
  bad_version?: string;
  callback?: DeployCallbackPayload;
  /** The server has the final outcome. */
  reported: boolean;
  /** Times the agent picked this deploy up again after a restart. */
  recoveries: number;
  /** The server's claim that handed this deploy out: every report and the callback name it. */
  attempt_id?: string;
}

export class DeployJournal {
  constructor(readonly dir: string) {}

  file(id: string): string {
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(id) || id.startsWith('.')) throw new TypeError(`bad deploy id ${id}`);
    return path.join(this.dir, `${id}.json`);
  }

  private queue = new Map<string, Promise<void>>();

  /** Replace the entry; writes of one deploy are serialized (they share a temp name). */
  write(e: JournalEntry): Promise<void> {
    const body = JSON.stringify(e);
    const prev = this.queue.get(e.id) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(() => this.writeNow(e.id, body));
    this.queue.set(e.id, next);
    void next.finally(() => {
      if (this.queue.get(e.id) === next) this.queue.delete(e.id);
    }).catch(() => {});
    return next;
  }

  private async writeNow(id: string, body: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const f = this.file(id);
    const tmp = `${f}.tmp-${process.pid}`;
    const h = await open(tmp, 'w', 0o600);
    try {
      await h.writeFile(body);
      await h.sync();
    } finally {
      await h.close();
    }
    await rename(tmp, f);
  }

  async read(id: string): Promise<JournalEntry | undefined> {
    try {
      return JSON.parse(await readFile(this.file(id), 'utf8')) as JournalEntry;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async list(): Promise<JournalEntry[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: JournalEntry[] = [];
    for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
      try {
        out.push(JSON.parse(await readFile(path.join(this.dir, n), 'utf8')) as JournalEntry);
      } catch {
        // A torn temp file never has the .json name; an unreadable entry is skipped.
      }
    }
    return out;
  }

  /** The last successful deploy of the same place (same target path or container name). */
  async lastGood(spec: DeploySpec, except: string): Promise<JournalEntry | undefined> {
    const key = placeOf(spec);
    const good = (await this.list()).filter((e) => e.id !== except && e.status === 'success' && placeOf(e.spec) === key && !e.rollback_of);
    return good.sort((a, b) => (a.started < b.started ? 1 : -1))[0];
  }

  /** Drop finished, reported entries beyond the newest `keep` (the journal stays bounded). */
  async prune(keep = 100): Promise<number> {
    const done = (await this.list()).filter((e) => e.phase === 'done' && e.reported).sort((a, b) => (a.started < b.started ? 1 : -1));
    const drop = done.slice(keep);
    for (const e of drop) await this.remove(e.id);
    return drop.length;
  }

  async remove(id: string): Promise<void> {
    await rm(this.file(id), { force: true });
  }
}

/** Where a deploy lands: what "the previous release" is relative to. */
export function placeOf(spec: DeploySpec): string {
  switch (spec.type) {
    case 'docker':
      return `docker:${spec.name}`;
    case 'shell':
      return `shell:${spec.workdir ?? ''}`;
    default:
      return `${spec.type}:${path.resolve(spec.path)}`;
  }
}
