// The embedded default store: a directory on the local file system, one file per key. Writes go
// to a temp file in the target directory and are renamed (or linked) into place, so a reader
// never sees a partial object and `putIfAbsent` never clobbers.
import { randomBytes } from 'node:crypto';
import type { Dir } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { KkError, makeDurable } from '@kk/core';
import type { ByteRange, DriverCapabilities, ObjectInfo, PruneDriver } from '@kk/core';
import { TEMP_PREFIX, checkKey, checkPrefix } from './keys.js';

export interface FileDriverOptions {
  /** Absolute path of the store directory. Created on first write if missing. Required. */
  root: string;
  /**
   * Make writes durable when the Store asks (`flush()`): one syncfs of the store's file system
   * (or an fsync per written file where syncfs is unavailable). Default: true. `false` leaves
   * durability to the kernel, like cp and rsync.
   */
  fsync?: boolean;
}

const STAT_CONCURRENCY = 64;
/** ENOENT retries of mkdir + write when another process keeps removing the directory. */
const MKDIR_RETRIES = 50;

export function createFileDriver(opts: FileDriverOptions) {
  if (!path.isAbsolute(opts.root)) throw new TypeError(`file store root must be an absolute path, got "${opts.root}"`);
  const root = path.resolve(opts.root);
  const fsync = opts.fsync ?? true;
  const capabilities: DriverCapabilities = {
    rangeReads: true,
    atomicCreate: true,
    listing: true,
    deletion: true,
    batchExists: false,
  };

  const backendError = (op: string, key: string, err: unknown) => storeError(root, op, key, err);
  const fileOf = (key: string) => path.join(root, ...checkKey(key).split('/'));
  // Directories known to exist: most writes land in one of 256 chunk directories.
  const knownDirs = new Set<string>();
  // Files written since the last flush, for the per-file fallback.
  let dirty = new Set<string>();
  let flushing: Promise<void> | undefined;

  // Deletes remove the directories they empty; a writer may be creating one of them at that
  // moment. Within this process the two never interleave: a writer marks its directory and
  // every ancestor as in use until its object is in place, a delete never rmdirs a marked
  // directory, and a writer waits for an rmdir already under way before its mkdir. Another
  // process on the same root can still rmdir under us: then mkdir or the write fails with
  // ENOENT and is retried from the mkdir (an rmdir only wins against an empty directory, so
  // every retry makes progress unless a deleter empties the same directory again at once).
  const inUse = new Map<string, number>();
  const removing = new Map<string, Promise<unknown>>();

  function ancestors(dir: string): string[] {
    const out: string[] = [];
    for (let d = dir; d !== root && d.startsWith(root); d = path.dirname(d)) out.push(d);
    return out;
  }

  /** Run `write` with `dir` and its ancestors protected from this process's deletes. */
  async function inDir<T>(dir: string, write: () => Promise<T>): Promise<T> {
    const dirs = ancestors(dir);
    for (const d of dirs) inUse.set(d, (inUse.get(d) ?? 0) + 1);
    try {
      for (const d of dirs) {
        const p = removing.get(d);
        if (p) await p;
      }
      return await write();
    } finally {
      for (const d of dirs) {
        const n = inUse.get(d)! - 1;
        if (n) inUse.set(d, n);
        else inUse.delete(d);
      }
    }
  }

  /** Writes `data` to a fresh temp file next to `file` and returns the temp file's path. */
  async function writeTemp(file: string, data: Uint8Array): Promise<string> {
    const dir = path.dirname(file);
    for (let attempt = 0; ; attempt++) {
      const tmp = path.join(dir, TEMP_PREFIX + randomBytes(8).toString('hex'));
      try {
        if (!knownDirs.has(dir)) {
          await fs.mkdir(dir, { recursive: true });
          knownDirs.add(dir);
        }
        await fs.writeFile(tmp, data, { flag: 'wx' });
        return tmp;
      } catch (err) {
        await fs.rm(tmp, { force: true }).catch(() => {});
        knownDirs.delete(dir);
        // Another process removed a parent between our mkdir and our write: make it again.
        if (errnoOf(err) === 'ENOENT' && attempt < MKDIR_RETRIES) {
          if (attempt > 2) await new Promise((r) => setTimeout(r, Math.min(50, attempt * 2)));
          continue;
        }
        throw err;
      }
    }
  }

  function written(file: string): void {
    if (fsync) dirty.add(file);
  }

  /** Streams the objects under `dir` (whose key prefix is `dirKey`) that start with `prefix`. */
  async function* walk(dir: string, dirKey: string, prefix: string): AsyncGenerator<ObjectInfo> {
    let entries: Dir;
    try {
      entries = await fs.opendir(dir);
    } catch (err) {
      if (isMissing(err)) return;
      throw err;
    }
    for await (const entry of entries) {
      if (entry.name.startsWith(TEMP_PREFIX)) continue;
      const key = dirKey + entry.name;
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if ((key + '/').startsWith(prefix)) yield* walk(file, key + '/', prefix);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        const info = await statFile(key, file, 'list');
        if (info) yield info;
      }
    }
  }

  async function statFile(key: string, file: string, op: string): Promise<ObjectInfo | undefined> {
    try {
      const st = await fs.stat(file);
      return st.isFile() ? { key, size: st.size, mtime: Math.floor(st.mtimeMs) } : undefined;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw backendError(op, key, err);
    }
  }

  return {
    name: 'file',
    capabilities,

    async get(key: string, range?: ByteRange) {
      const file = fileOf(key);
      try {
        if (!range) return await fs.readFile(file);
        const handle = await fs.open(file, 'r');
        try {
          const { size } = await handle.stat();
          const end = Math.min(range.end, size - 1);
          const buf = Buffer.alloc(Math.max(0, end - range.start + 1));
          let filled = 0;
          while (filled < buf.length) {
            const { bytesRead } = await handle.read(buf, filled, buf.length - filled, range.start + filled);
            if (bytesRead === 0) break;
            filled += bytesRead;
          }
          return buf.subarray(0, filled);
        } finally {
          await handle.close();
        }
      } catch (err) {
        if (isMissing(err) || errnoOf(err) === 'EISDIR') return undefined;
        throw backendError('get', key, err);
      }
    },

    async stat(key: string) {
      return statFile(key, fileOf(key), 'stat');
    },

    async hasMany(keys: readonly string[]) {
      const files = keys.map(fileOf);
      const result = new Array<boolean>(keys.length).fill(false);
      let next = 0;
      const worker = async () => {
        for (let i = next++; i < files.length; i = next++) result[i] = (await statFile(keys[i]!, files[i]!, 'hasMany')) !== undefined;
      };
      await Promise.all(Array.from({ length: Math.min(STAT_CONCURRENCY, files.length) }, worker));
      return result;
    },

    async *list(prefix: string): AsyncIterable<ObjectInfo> {
      const dirKey = checkPrefix(prefix).slice(0, prefix.lastIndexOf('/') + 1);
      try {
        yield* walk(path.join(root, ...dirKey.split('/').filter(Boolean)), dirKey, prefix);
      } catch (err) {
        throw err instanceof KkError ? err : backendError('list', prefix, err);
      }
    },

    async listChildren(prefix: string) {
      if (prefix !== '' && !prefix.endsWith('/')) throw new TypeError(`listChildren prefix must end in "/", got "${prefix}"`);
      const dir = path.join(root, ...checkPrefix(prefix).split('/').filter(Boolean));
      try {
        const names = await fs.readdir(dir);
        return names.filter((n) => !n.startsWith(TEMP_PREFIX)).sort();
      } catch (err) {
        if (isMissing(err)) return [];
        throw backendError('listChildren', prefix, err);
      }
    },

    async put(key: string, data: Uint8Array) {
      const file = fileOf(key);
      try {
        await inDir(path.dirname(file), async () => {
          // The temp file keeps the directory non-empty, so nobody can rmdir it before the rename.
          const tmp = await writeTemp(file, data);
          try {
            await fs.rename(tmp, file);
            written(file);
          } catch (err) {
            await fs.rm(tmp, { force: true });
            throw err;
          }
        });
      } catch (err) {
        throw backendError('put', key, err);
      }
    },

    async putIfAbsent(key: string, data: Uint8Array) {
      const file = fileOf(key);
      try {
        // Large objects are checked first so a lost race costs a stat, not a write.
        if (data.length > 4 * 1024 * 1024 && (await exists(file))) return false;
        return await inDir(path.dirname(file), async () => {
          const tmp = await writeTemp(file, data);
          try {
            await fs.link(tmp, file);
            written(file);
            return true;
          } catch (err) {
            if (errnoOf(err) === 'EEXIST') return false;
            throw err;
          } finally {
            // unlink, not rm: rm stats first (one syscall more per object; measured by the http work).
            await fs.unlink(tmp).catch((err: unknown) => {
              if (!isMissing(err)) throw err;
            });
          }
        });
      } catch (err) {
        throw backendError('putIfAbsent', key, err);
      }
    },

    async delete(key: string) {
      const file = fileOf(key);
      try {
        await fs.unlink(file);
        knownDirs.delete(path.dirname(file));
      } catch (err) {
        if (!isMissing(err) && errnoOf(err) !== 'EISDIR') throw backendError('delete', key, err);
      }
      // Best effort: empty "directories" would otherwise linger in listChildren. Never one a
      // writer of this process is using (see inDir); rmdir itself refuses a non-empty one.
      for (const dir of ancestors(path.dirname(file))) {
        if (inUse.has(dir) || removing.has(dir)) break;
        const p = fs.rmdir(dir);
        removing.set(dir, p.catch(() => {}));
        try {
          await p;
          knownDirs.delete(dir);
        } catch {
          break;
        } finally {
          removing.delete(dir);
        }
      }
    },

    async sweepTemp({ olderThanMs, dryRun }: { olderThanMs: number; dryRun?: boolean }) {
      const cutoff = Date.now() - olderThanMs;
      let files = 0;
      let bytes = 0;
      const sweep = async (dir: string): Promise<void> => {
        let entries: Dir;
        try {
          entries = await fs.opendir(dir);
        } catch (err) {
          if (isMissing(err)) return;
          throw backendError('sweepTemp', path.relative(root, dir), err);
        }
        for await (const entry of entries) {
          const file = path.join(dir, entry.name);
          if (entry.isDirectory()) await sweep(file);
          else if (entry.isFile() && entry.name.startsWith(TEMP_PREFIX)) {
            const st = await fs.stat(file).catch(() => undefined);
            if (!st || st.mtimeMs > cutoff) continue;
            if (!dryRun) await fs.rm(file, { force: true });
            files++;
            bytes += st.size;
          }
        }
      };
      await sweep(root);
      return { files, bytes };
    },

    async flush() {
      // A flush already running may have started its syncfs before this caller's writes
      // finished: wait for it, then flush whatever is still dirty.
      while (flushing) await flushing;
      if (!dirty.size) return;
      const files = dirty;
      dirty = new Set();
      // The directory entries made by rename/link are covered by syncfs; the fallback fsyncs
      // the files only (ext4 and xfs order a new file's entry with its data).
      flushing = makeDurable(root, files).finally(() => {
        flushing = undefined;
      });
      await flushing;
    },

    async close() {},
  } satisfies PruneDriver;
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch (err) {
    if (isMissing(err)) return false;
    throw err;
  }
}

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function isMissing(err: unknown): boolean {
  const code = errnoOf(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function storeError(root: string, op: string, key: string, err: unknown): KkError {
  if (err instanceof KkError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  const code = errnoOf(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    // The temp file was removed and nothing was renamed into place: no partial object is visible.
    return new KkError('DISK_FULL', `file store ${root}: no space left on its file system writing "${key}" (${reason})`, {
      cause: err,
      hint: 'free space on the store\'s file system (`kk gc` removes unreferenced chunks) and push again: what was stored so far is kept and not sent twice',
      details: { key },
    });
  }
  return new KkError('BACKEND', `file store: ${op} "${key}" failed: ${reason}`, { cause: err, details: { key } });
}
