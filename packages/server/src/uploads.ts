// Upload sessions of the seed's publish API (`/upload/init`, `PUT /file/...`, `/upload/finish`),
// kept in the store so any instance can take the next request of a session:
//   server/uploads/<project>/<app>/<version>/session       the session
//   server/uploads/<project>/<app>/<version>/files/<hash>   one received or matched file each
//   server/upload-ids/<id>                                  id -> project/app/version
import { createHash, randomBytes } from 'node:crypto';
import { type Digest, type FileEntry, type Store, forEachLimit } from '@kk/core';

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

const base = (p: string, a: string, v: string) => `server/uploads/${p}/${a}/${v}/`;
const pathHash = (path: string) => createHash('sha256').update(path).digest('hex');

export class Uploads {
  constructor(private readonly store: Store) {}

  /** The open (unexpired) session of a version. */
  async get(project: string, app: string, version: string): Promise<UploadSession | undefined> {
    const s = await this.read(project, app, version);
    return s && Date.parse(s.expires) > Date.now() ? s : undefined;
  }

  private async read(project: string, app: string, version: string): Promise<UploadSession | undefined> {
    const raw = await this.store.driver.get(`${base(project, app, version)}session`);
    return raw ? (JSON.parse(raw.toString('utf8')) as UploadSession) : undefined;
  }

  async byId(id: string): Promise<UploadSession | undefined> {
    if (!/^up-[0-9a-f]{24}$/.test(id)) return undefined;
    const raw = await this.store.driver.get(`server/upload-ids/${id}`);
    if (!raw) return undefined;
    const { project, app, version } = JSON.parse(raw.toString('utf8')) as { project: string; app: string; version: string };
    const s = await this.get(project, app, version);
    return s?.id === id ? s : undefined;
  }

  /** The open session of a version, or a new one. */
  async open(
    project: string,
    app: string,
    version: string,
    token: string,
    ttlMs: number,
    extra: Pick<UploadSession, 'builder' | 'git_commit' | 'meta'> & { declared?: DeclaredFile[] } = {},
  ): Promise<{ session: UploadSession; resumed: boolean }> {
    const existing = await this.read(project, app, version);
    if (existing && Date.parse(existing.expires) <= Date.now()) await this.discard(existing);
    else if (existing) {
      if (extra.declared?.length) {
        const known = new Set(existing.declared.map((d) => d.path));
        existing.declared.push(...extra.declared.filter((d) => !known.has(d.path)));
      }
      for (const k of ['builder', 'git_commit', 'meta'] as const) if (extra[k] !== undefined) (existing as unknown as Record<string, unknown>)[k] = extra[k];
      await this.save(existing);
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
    await this.store.writer.put(`server/upload-ids/${session.id}`, Buffer.from(JSON.stringify({ project, app, version })));
    await this.save(session);
    return { session, resumed: false };
  }

  private save(s: UploadSession): Promise<void> {
    return this.store.writer.put(`${base(s.project, s.app, s.version)}session`, Buffer.from(JSON.stringify(s)));
  }

  async putFile(s: UploadSession, entry: FileEntry): Promise<void> {
    await this.store.writer.put(`${base(s.project, s.app, s.version)}files/${pathHash(entry.path)}`, Buffer.from(JSON.stringify(entry)));
  }

  async getFile(s: UploadSession, path: string): Promise<FileEntry | undefined> {
    const raw = await this.store.driver.get(`${base(s.project, s.app, s.version)}files/${pathHash(path)}`);
    return raw ? (JSON.parse(raw.toString('utf8')) as FileEntry) : undefined;
  }

  async files(s: UploadSession): Promise<FileEntry[]> {
    const prefix = `${base(s.project, s.app, s.version)}files/`;
    const names = await this.store.driver.listChildren(prefix);
    const out: FileEntry[] = [];
    await forEachLimit(names, 32, async (n) => {
      const raw = await this.store.driver.get(`${prefix}${n}`);
      if (raw) out.push(JSON.parse(raw.toString('utf8')) as FileEntry);
    });
    return out;
  }

  /** What a finished upload produced, kept under its id so a retried finish can answer it. */
  async finished(id: string): Promise<FinishedUpload | undefined> {
    if (!/^up-[0-9a-f]{24}$/.test(id)) return undefined;
    const raw = await this.store.driver.get(`server/upload-ids/${id}`);
    if (!raw) return undefined;
    return (JSON.parse(raw.toString('utf8')) as { finished?: FinishedUpload }).finished;
  }

  /** Close a session that created its version: its id now answers with the result. */
  async finish(s: UploadSession, result: FinishedUpload): Promise<void> {
    const at = new Date().toISOString();
    await this.store.writer.put(`server/upload-ids/${s.id}`, Buffer.from(JSON.stringify({ project: s.project, app: s.app, version: s.version, finished: result, at })));
    await this.discard(s, false);
  }

  /** Remove a session and everything recorded under it. */
  async discard(s: Pick<UploadSession, 'id' | 'project' | 'app' | 'version'>, withId = true): Promise<void> {
    const prefix = base(s.project, s.app, s.version);
    const keys: string[] = [];
    for await (const o of this.store.driver.list(prefix)) keys.push(o.key);
    // The session first: a finish never sees a session whose files are half gone.
    const session = `${prefix}session`;
    if (keys.includes(session)) await this.store.pruner.delete(session);
    await forEachLimit(keys.filter((k) => k !== session), 16, (k) => this.store.pruner.delete(k));
    if (withId) await this.store.pruner.delete(`server/upload-ids/${s.id}`);
  }

  /** Drop expired sessions and the ids of uploads finished a day ago (the nightly job). Returns how many sessions. */
  async expire(): Promise<number> {
    for await (const o of this.store.driver.list('server/upload-ids/')) {
      if (o.mtime > Date.now() - 86_400_000) continue;
      const raw = await this.store.driver.get(o.key);
      if (raw && (JSON.parse(raw.toString('utf8')) as { finished?: unknown }).finished) await this.store.pruner.delete(o.key);
    }
    let n = 0;
    const sessions: string[] = [];
    for await (const o of this.store.driver.list('server/uploads/')) if (o.key.endsWith('/session')) sessions.push(o.key);
    for (const key of sessions) {
      const raw = await this.store.driver.get(key);
      if (!raw) continue;
      const s = JSON.parse(raw.toString('utf8')) as UploadSession;
      if (Date.parse(s.expires) <= Date.now()) {
        await this.discard(s);
        n++;
      }
    }
    return n;
  }
}
