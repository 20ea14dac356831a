// A stat cache (size, mtime, inode, ctime -> digest and chunks) so unchanged files are not
// rehashed. Entries written within the mtime granularity of the file's own change are not
// trusted, so a file modified right after hashing is never missed ("racy git" problem).
import type { ChunkRef } from './manifest.js';
import type { Digest } from './digest.js';
import { readJsonFile, writeFileAtomic } from './state.js';

export interface StatKey {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

export interface StatEntry extends StatKey {
  sha256: Digest;
  chunks: ChunkRef[];
}

interface StatCacheFile {
  format: 'kk-statcache/1';
  /** Identifies the chunking parameters the chunk lists were computed with. */
  chunking: string;
  writtenMs: number;
  entries: Record<string, StatEntry>;
}

const RACY_MS = 2000;

export class StatCache {
  private entries = new Map<string, StatEntry>();
  private writtenMs = 0;

  constructor(
    readonly file: string,
    private readonly chunking: string,
  ) {}

  async load(): Promise<this> {
    const f = await readJsonFile<StatCacheFile>(this.file);
    if (f?.format === 'kk-statcache/1' && f.chunking === this.chunking) {
      this.entries = new Map(Object.entries(f.entries));
      this.writtenMs = f.writtenMs;
    }
    return this;
  }

  /** The cached hash of `path`, if its stat is unchanged and was not racy when cached. */
  lookup(path: string, st: StatKey): StatEntry | undefined {
    const e = this.entries.get(path);
    if (!e) return undefined;
    if (e.size !== st.size || e.mtimeMs !== st.mtimeMs || e.ctimeMs !== st.ctimeMs || e.ino !== st.ino) return undefined;
    if (this.writtenMs - Math.max(e.mtimeMs, e.ctimeMs) < RACY_MS) return undefined;
    return e;
  }

  set(path: string, e: StatEntry): void {
    this.entries.set(path, e);
  }

  /** Replace the whole content (entries not seen in this run are dropped). */
  replace(entries: Map<string, StatEntry>): void {
    this.entries = entries;
  }

  async save(): Promise<void> {
    const f: StatCacheFile = {
      format: 'kk-statcache/1',
      chunking: this.chunking,
      writtenMs: Date.now(),
      entries: Object.fromEntries(this.entries),
    };
    await writeFileAtomic(this.file, JSON.stringify(f));
  }
}
