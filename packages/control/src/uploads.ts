// Upload sessions of the seed's publish API (`/upload/init`, `PUT /file/...`, `/upload/finish`):
// one row per open session (one per version), one row per received or matched file, so any
// instance can take the next request of a session.
import { randomBytes } from 'node:crypto';
import type { Digest, FileEntry } from '@kk/core';
import type { ControlDb, Executor } from './db.js';
import type { UploadSessionsTable } from './schema.js';

export interface DeclaredFile {
  path: string;
  size: number;
  sha256: Digest;
}

export interface UploadSession {
  id: string;
  project: string;
  app: string;
  version: string;
  token: string;
  created: string;
  expires: string;
  builder?: string;
  git_commit?: string;
  meta?: Record<string, string>;
  /** Files announced at init: finish refuses until each has arrived or was matched. */
  declared: DeclaredFile[];
}

/** What `POST /upload/finish` answered when it created the version. */
export interface FinishedUpload {
  project: string;
  app: string;
  version: string;
  manifest: string;
  files: number;
  bytes: number;
}

export function sessionFromRow(r: UploadSessionsTable): UploadSession {
  const s: UploadSession = { id: r.id, project: r.project, app: r.app, version: r.version, token: r.token, created: r.created, expires: r.expires, declared: JSON.parse(r.declared) as DeclaredFile[] };
  if (r.builder !== null) s.builder = r.builder;
  if (r.git_commit !== null) s.git_commit = r.git_commit;
  if (r.meta !== null) s.meta = JSON.parse(r.meta) as Record<string, string>;
  return s;
}

export function sessionRow(s: UploadSession): UploadSessionsTable {
  return {
    id: s.id,
    project: s.project,
    app: s.app,
    version: s.version,
    token: s.token,
    created: s.created,
    expires: s.expires,
    expires_ms: Date.parse(s.expires),
    builder: s.builder ?? null,
    git_commit: s.git_commit ?? null,
    meta: s.meta === undefined ? null : JSON.stringify(s.meta),
    declared: JSON.stringify(s.declared),
    finished: null,
    finished_ms: null,
  };
}

export class Uploads {
  constructor(private readonly cdb: ControlDb) {}

  /** The open (unexpired) session of a version. */
  async get(project: string, app: string, version: string, ex: Executor = this.cdb.db): Promise<UploadSession | undefined> {
    const r = await ex.selectFrom('upload_sessions').selectAll().where('project', '=', project).where('app', '=', app).where('version', '=', version).where('expires_ms', '>', Date.now()).where('finished', 'is', null).executeTakeFirst();
    return r ? sessionFromRow(r) : undefined;
  }

  async byId(id: string): Promise<UploadSession | undefined> {
    if (!/^up-[0-9a-f]{24}$/.test(id)) return undefined;
    const r = await this.cdb.db.selectFrom('upload_sessions').selectAll().where('id', '=', id).where('expires_ms', '>', Date.now()).where('finished', 'is', null).executeTakeFirst();
    return r ? sessionFromRow(r) : undefined;
  }

  /** What a finished upload produced, kept under its id so a retried finish can answer it. */
  async finished(id: string): Promise<FinishedUpload | undefined> {
    if (!/^up-[0-9a-f]{24}$/.test(id)) return undefined;
    const r = await this.cdb.db.selectFrom('upload_sessions').select('finished').where('id', '=', id).executeTakeFirst();
    return r?.finished ? (JSON.parse(r.finished) as FinishedUpload) : undefined;
  }

  /** Close a session that created its version: its files go, its id now answers with the result. */
  async finish(s: Pick<UploadSession, 'id'>, result: FinishedUpload): Promise<void> {
    await this.cdb.writeTx(async (tx) => {
      await tx.updateTable('upload_sessions').set({ finished: JSON.stringify(result), finished_ms: Date.now(), declared: '[]' }).where('id', '=', s.id).execute();
      await tx.deleteFrom('upload_files').where('session', '=', s.id).execute();
    });
  }

  /** The open session of a version, or a new one (an expired one is discarded first). */
  async open(
    project: string,
    app: string,
    version: string,
    token: string,
    ttlMs: number,
    extra: Pick<UploadSession, 'builder' | 'git_commit' | 'meta'> & { declared?: DeclaredFile[] } = {},
  ): Promise<{ session: UploadSession; resumed: boolean }> {
    return this.cdb.writeTx(async (tx) => {
      const row = await tx.selectFrom('upload_sessions').selectAll().where('project', '=', project).where('app', '=', app).where('version', '=', version).executeTakeFirst();
      const existing = row ? sessionFromRow(row) : undefined;
      if (existing && (row!.finished !== null || Date.parse(existing.expires) <= Date.now())) await tx.deleteFrom('upload_sessions').where('id', '=', existing.id).execute();
      else if (existing) {
        if (extra.declared?.length) {
          const known = new Set(existing.declared.map((d) => d.path));
          existing.declared.push(...extra.declared.filter((d) => !known.has(d.path)));
        }
        for (const k of ['builder', 'git_commit', 'meta'] as const) if (extra[k] !== undefined) (existing as unknown as Record<string, unknown>)[k] = extra[k];
        const { id: _id, ...set } = sessionRow(existing);
        await tx.updateTable('upload_sessions').set(set).where('id', '=', existing.id).execute();
        return { session: existing, resumed: true };
      }
      const now = Date.now();
      const session: UploadSession = {
        id: `up-${randomBytes(12).toString('hex')}`,
        project,
        app,
        version,
        token,
        created: new Date(now).toISOString(),
        expires: new Date(now + ttlMs).toISOString(),
        declared: extra.declared ?? [],
      };
      if (extra.builder !== undefined) session.builder = extra.builder;
      if (extra.git_commit !== undefined) session.git_commit = extra.git_commit;
      if (extra.meta !== undefined) session.meta = extra.meta;
      await tx.insertInto('upload_sessions').values(sessionRow(session)).execute();
      return { session, resumed: false };
    });
  }

  /** Record a received or matched file (a second record for a path replaces the first). */
  async putFile(s: Pick<UploadSession, 'id'>, entry: FileEntry): Promise<void> {
    await this.cdb.db
      .insertInto('upload_files')
      .values({ session: s.id, path: entry.path, entry: JSON.stringify(entry) })
      .onConflict((oc) => oc.columns(['session', 'path']).doUpdateSet({ entry: JSON.stringify(entry) }))
      .execute();
  }

  async getFile(s: Pick<UploadSession, 'id'>, path: string): Promise<FileEntry | undefined> {
    const r = await this.cdb.db.selectFrom('upload_files').select('entry').where('session', '=', s.id).where('path', '=', path).executeTakeFirst();
    return r ? (JSON.parse(r.entry) as FileEntry) : undefined;
  }

  async files(s: Pick<UploadSession, 'id'>): Promise<FileEntry[]> {
    const rows = await this.cdb.db.selectFrom('upload_files').select('entry').where('session', '=', s.id).orderBy('path').execute();
    return rows.map((r) => JSON.parse(r.entry) as FileEntry);
  }

  /** Remove a session and everything recorded under it (also a finished one's answer). */
  async discard(s: Pick<UploadSession, 'id'>): Promise<void> {
    await this.cdb.db.deleteFrom('upload_sessions').where('id', '=', s.id).execute();
  }

  /** Drop expired sessions and the ids of uploads finished a day ago (the nightly job). Returns how many sessions. */
  async expire(now = Date.now()): Promise<number> {
    const r = await this.cdb.db.deleteFrom('upload_sessions').where('expires_ms', '<=', now).where('finished', 'is', null).executeTakeFirst();
    await this.cdb.db.deleteFrom('upload_sessions').where('finished_ms', '<=', now - 86_400_000).execute();
    return Number(r.numDeletedRows);
  }
}
