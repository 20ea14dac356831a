// Local state of one deploy directory (DESIGN 7), kept outside it: what was applied (history),
// copies of those manifests, the stat cache, the apply lock, the commit journal, the staging
// area and a cache of files replaced by later versions (for offline rollback).
import { hostname } from 'node:os';
import { lstat, mkdir, open, readFile, readdir, rm, stat, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { type Digest, digestHex, sha256Digest } from '../digest.js';
import { KkError } from '../errors.js';
import { type Manifest, decodeManifest, manifestBytes } from '../manifest.js';
import { defaultStateRoot, pathKey, readJsonFile, writeFileAtomic } from '../state.js';

export interface AppliedVersion {
  project: string;
  app: string;
  version: string;
  manifest: Digest;
  appliedAt: string;
  /** The ignore rules of that apply: rollback protects the same paths by default. */
  ignore?: string[];
  /** How it was applied when not a full mirror (`skip-existing`, `events`): the directory may hold more or other files. */
  mode?: 'skip-existing' | 'events';
}

export interface TargetStateFile {
  format: 'kk-target/1';
  target: string;
  /** Newest first; [0] is what the directory holds now. */
  history: AppliedVersion[];
}

export interface PlacedFile {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  sha256: Digest;
}

const HISTORY = 20;

const STAT_FORMAT = 'kk-stat/2';
/** path, size, mtimeMs, ctimeMs, ino, sha256 */
type StatRow = [string, number, number, number, number, Digest];
interface StatFile {
  format: typeof STAT_FORMAT;
  rows: StatRow[];
}

/** A deploy path reached through a symlink: the real directory kk manages under that spelling. */
export interface LinkRecord {
  path: string;
  real: string;
}

export class TargetState {
  readonly dir: string;
  readonly root: string;

  /** `target` is the real path of the deploy directory (state is keyed by it, issue 10 item 14). */
  constructor(
    readonly target: string,
    stateRoot?: string,
  ) {
    this.target = resolve(target);
    this.root = stateRoot ? resolve(stateRoot) : defaultStateRoot();
    this.dir = join(this.root, 'targets', pathKey(this.target));
  }

  private linkFile(spelling: string): string {
    return join(this.root, 'links', `${pathKey(spelling)}.json`);
  }

  /** Which real directory the path `spelling` led to when kk last applied through it. */
  async readLink(spelling: string): Promise<LinkRecord | undefined> {
    const r = await readJsonFile<LinkRecord>(this.linkFile(spelling));
    return r && r.path === spelling && typeof r.real === 'string' ? r : undefined;
  }

  async writeLink(spelling: string): Promise<void> {
    const r: LinkRecord = { path: spelling, real: this.target };
    await writeFileAtomic(this.linkFile(spelling), JSON.stringify(r));
  }

  /** The cache of replaced files: how many, and the bytes only the cache holds (not hard links into the directory). */
  async cacheUsage(): Promise<{ files: number; bytes: number; bytesShared: number }> {
    let files = 0;
    let bytes = 0;
    let bytesShared = 0;
    for (const n of await readdir(this.cacheDir).catch(() => [] as string[])) {
      const st = await lstat(join(this.cacheDir, n)).catch(() => undefined);
      if (!st?.isFile()) continue;
      files++;
      if (st.nlink > 1) bytesShared += st.size;
      else bytes += st.size;
    }
    return { files, bytes, bytesShared };
  }

  get stagingDir(): string {
    return join(this.dir, 'staging');
  }
  get cacheDir(): string {
    return join(this.dir, 'files');
  }
  private get stateFile(): string {
    return join(this.dir, 'state.json');
  }
  private get statFile(): string {
    return join(this.dir, 'stat.json');
  }
  get journalFile(): string {
    return join(this.dir, 'journal.json');
  }
  private get lockFile(): string {
    return join(this.dir, 'lock');
  }

  async read(): Promise<TargetStateFile | undefined> {
    const s = await readJsonFile<TargetStateFile>(this.stateFile);
    return s?.format === 'kk-target/1' ? s : undefined;
  }

  async recordApplied(v: AppliedVersion): Promise<TargetStateFile> {
    const prev = await this.read();
    const history = [v, ...(prev?.history ?? [])].slice(0, HISTORY);
    const s: TargetStateFile = { format: 'kk-target/1', target: this.target, history };
    await writeFileAtomic(this.stateFile, JSON.stringify(s, null, 1));
    return s;
  }

  async saveManifest(m: Manifest): Promise<Digest> {
    // A manifest read from the store is saved as the bytes it was read from (already checked).
    const { bytes, digest } = manifestBytes(m);
    await writeFileAtomic(join(this.dir, 'manifests', `${digestHex(digest)}.json`), bytes);
    return digest;
  }

  /**
   * A manifest copy kept here. Only ever written from a validated manifest, in canonical form, and
   * named by its digest: bytes that still hash to the name are those bytes, so they are parsed
   * without validating the whole structure again (20,000 paths cost more to check than to read).
   */
  async loadManifest(d: Digest): Promise<Manifest | undefined> {
    try {
      const bytes = await readFile(join(this.dir, 'manifests', `${digestHex(d)}.json`));
      if (sha256Digest(bytes) !== d) return decodeManifest(bytes, d);
      return JSON.parse(bytes.toString('utf8')) as Manifest;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async readStat(): Promise<Map<string, PlacedFile>> {
    const s = await readJsonFile<StatFile | Record<string, PlacedFile>>(this.statFile);
    if (!s) return new Map();
    if (s.format === STAT_FORMAT && Array.isArray(s.rows)) {
      const out = new Map<string, PlacedFile>();
      for (const r of s.rows as StatRow[]) out.set(r[0], { size: r[1], mtimeMs: r[2], ctimeMs: r[3], ino: r[4], sha256: r[5] });
      return out;
    }
    // The first format: one object per path (written by earlier releases).
    return new Map(Object.entries(s as Record<string, PlacedFile>));
  }

  /** Rows, not objects: a third smaller and faster to parse for a large tree. */
  async writeStat(entries: Map<string, PlacedFile>): Promise<void> {
    const rows: StatRow[] = [];
    for (const [p, e] of entries) rows.push([p, e.size, e.mtimeMs, e.ctimeMs, e.ino, e.sha256]);
    await writeFileAtomic(this.statFile, JSON.stringify({ format: STAT_FORMAT, rows }));
  }

  async clearStat(): Promise<void> {
    await rm(this.statFile, { force: true });
  }

  /** Take the apply lock: one apply per target at a time. A dead holder's lock is taken over. */
  async lock(command: string): Promise<() => Promise<void>> {
    await mkdir(this.dir, { recursive: true });
    const body = JSON.stringify({ pid: process.pid, host: hostname(), started: new Date().toISOString(), command });
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fh = await open(this.lockFile, 'wx');
        await fh.writeFile(body);
        await fh.close();
        return async () => {
          await unlink(this.lockFile).catch(() => {});
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = await this.lockHolder();
      if (holder && !holder.stale) {
        throw new KkError('LOCKED', `${this.target} is being applied by pid ${holder.pid} on ${holder.host} (${holder.command}, since ${holder.started})`, {
          hint: 'wait for it to finish; if that process is gone, kk takes the lock over by itself',
          details: { ...holder },
        });
      }
      await unlink(this.lockFile).catch(() => {});
    }
    throw new KkError('LOCKED', `could not take the apply lock of ${this.target}`);
  }

  /** Who holds the apply lock, if anyone; `stale` when that process is gone. */
  async lockHolder(): Promise<{ pid: number; host: string; started: string; command: string; stale: boolean } | undefined> {
    const h = await readJsonFile<{ pid: number; host: string; started: string; command: string }>(this.lockFile);
    if (!h) {
      // A lock file that exists but is unreadable (torn write) belongs to nobody.
      return (await stat(this.lockFile).catch(() => undefined)) ? { pid: 0, host: '', started: '', command: '', stale: true } : undefined;
    }
    let alive = true;
    if (h.host === hostname()) {
      try {
        process.kill(h.pid, 0);
      } catch (err) {
        alive = (err as NodeJS.ErrnoException).code === 'EPERM';
      }
    }
    return { ...h, stale: !alive };
  }
}
