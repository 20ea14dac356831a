// Reports the server has not acknowledged yet, kept on disk so that none is lost when the server
// is away or the agent restarts: one file per report under `<state dir>/outbox/`, named by a
// sequence number, written atomically; sent in order; removed once the server accepted it, or
// once it refused it for good (a stale attempt, an unknown task).
import { mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { isKkError } from '@kk/core';
import type { AgentApi, Identity, Report } from './api.js';

export interface OutboxEntry {
  seq: number;
  task: string;
  attempt_id: string;
  report: Report;
}

export interface FlushResult {
  sent: number;
  /** Entries the server refused for good (dropped), by task. */
  refused: { task: string; attempt_id: string; code: string; message: string }[];
  /** Entries still waiting (the server could not be reached). */
  pending: number;
}

/** Codes after which the same report will never be accepted. */
const FINAL = new Set(['LOCKED', 'NOT_FOUND', 'FORBIDDEN', 'CONFIG_INVALID']);

export class Outbox {
  private readonly dir: string;
  private next = 0;
  private flushing: Promise<FlushResult> | undefined;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'outbox');
  }

  private async names(): Promise<string[]> {
    try {
      return (await readdir(this.dir)).filter((n) => /^\d{12}\.json$/.test(n)).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  async add(task: string, attempt_id: string, report: Report): Promise<OutboxEntry> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    if (this.next === 0) {
      const names = await this.names();
      this.next = names.length ? Number(names[names.length - 1]!.slice(0, 12)) + 1 : 1;
    }
    const entry: OutboxEntry = { seq: this.next++, task, attempt_id, report };
    const file = join(this.dir, `${String(entry.seq).padStart(12, '0')}.json`);
    const fh = await open(`${file}.tmp`, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(entry));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(`${file}.tmp`, file);
    return entry;
  }

  async entries(): Promise<OutboxEntry[]> {
    const out: OutboxEntry[] = [];
    for (const n of await this.names()) {
      try {
        out.push(JSON.parse(await readFile(join(this.dir, n), 'utf8')) as OutboxEntry);
      } catch {
        await unlink(join(this.dir, n)).catch(() => {}); // a torn file cannot be sent
      }
    }
    return out;
  }

  /** Send what is waiting, oldest first; stop at the first entry the server could not take now. One flush at a time. */
  flush(api: AgentApi, id: Identity): Promise<FlushResult> {
    this.flushing ??= this.flushOnce(api, id).finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async flushOnce(api: AgentApi, id: Identity): Promise<FlushResult> {
    const res: FlushResult = { sent: 0, refused: [], pending: 0 };
    const entries = await this.entries();
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      const file = join(this.dir, `${String(e.seq).padStart(12, '0')}.json`);
      try {
        await api.report(id, e.task, e.attempt_id, e.report);
        res.sent++;
      } catch (err) {
        if (isKkError(err) && FINAL.has(err.code)) {
          res.refused.push({ task: e.task, attempt_id: e.attempt_id, code: err.code, message: err.message });
        } else {
          res.pending = entries.length - i;
          return res;
        }
      }
      await unlink(file).catch(() => {});
    }
    return res;
  }
}
