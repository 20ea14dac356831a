// openat-style access to a deploy directory (issue 10 item 17). Node has no openat, but Linux's
// /proc/self/fd/<fd>/<name> gives the same semantics: every directory is opened one segment at a
// time from the target's root with O_NOFOLLOW, and every change names an entry of such an open
// directory, so a symlink swapped in at any moment can redirect nothing outside the target.
// Without /proc, each parent is lstat-checked immediately before use instead.
import {
  chmodSync,
  closeSync,
  constants as C,
  existsSync,
  fchmodSync,
  fstatSync,
  futimesSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmdirSync,
  unlinkSync,
  type Stats,
} from 'node:fs';
import { join } from 'node:path';
import { KkError } from '../errors.js';

const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
const HAVE_PROC = process.platform === 'linux' && existsSync('/proc/self/fd');

const code = (err: unknown) => (err as NodeJS.ErrnoException)?.code ?? '';

const splitParent = (rel: string): [string, string] => {
  const i = rel.lastIndexOf('/');
  return i < 0 ? ['', rel] : [rel.slice(0, i), rel.slice(i + 1)];
};

/** Open directory handles under one root, cached for a commit; `close()` releases them. */
export class TargetDirs {
  private readonly fds = new Map<string, number>();
  /** Directories made owner-writable so their entries could change: their modes before. */
  readonly madeWritable = new Map<string, number>();

  constructor(
    readonly root: string,
    readonly proc = HAVE_PROC,
  ) {
    if (proc) this.fds.set('', openSync(root, DIR_FLAGS));
  }

  /** A path for the entry `name` of the open directory `dir` that follows no symlink in between. */
  private entry(dir: string, name: string): string {
    if (this.proc) return `/proc/self/fd/${this.fds.get(dir)!}/${name}`;
    return join(this.root, dir, name);
  }

  /**
   * Open directory `rel` (a path relative to the root, '' for the root). Missing: undefined,
   * unless `create` (then it and its parents are made, mode 0700 until the commit sets modes).
   * A symlink or file where a directory must be: undefined, or with `create` replaced by a
   * directory; never followed.
   */
  dir(rel: string, create = false): string | undefined {
    if (this.proc ? this.fds.has(rel) : rel === '') return rel;
    const [parent, name] = splitParent(rel);
    if (this.dir(parent, create) === undefined) return undefined;
    const p = this.entry(parent, name);
    for (let attempt = 0; attempt < 3; attempt++) {
      const st = lstatOrUndefined(p);
      if (st?.isDirectory()) {
        if (!this.proc) return rel;
        try {
          this.fds.set(rel, openSync(p, DIR_FLAGS));
          return rel;
        } catch (err) {
          if (!['ELOOP', 'ENOTDIR', 'ENOENT'].includes(code(err))) throw err;
          continue; // swapped between lstat and open: look again
        }
      }
      if (!create) return undefined;
      this.writable(parent);
      if (st) unlinkSync(p);
      try {
        mkdirSync(p, 0o700);
      } catch (err) {
        if (code(err) !== 'EEXIST') throw err;
      }
    }
    throw new KkError('TARGET_CONFLICT', `${join(this.root, rel)} keeps changing while kk applies to it`, {
      hint: 'stop whatever is changing the directory, then pull again',
    });
  }

  /** A path that names the open directory `rel` itself (its handle), for other threads to write into. */
  handle(rel: string): string {
    if (this.dir(rel) === undefined) throw new KkError('TARGET_CONFLICT', `${join(this.root, rel)} is not a directory`);
    return this.proc ? `/proc/self/fd/${this.fds.get(rel)!}` : join(this.root, rel);
  }

  /** A no-follow path for `rel` inside its parent, or undefined when the parent is not there. */
  at(rel: string, createParents = false): string | undefined {
    const [parent, name] = splitParent(rel);
    return this.dir(parent, createParents) === undefined ? undefined : this.entry(parent, name);
  }

  lstat(rel: string): Stats | undefined {
    const p = this.at(rel);
    return p === undefined ? undefined : lstatOrUndefined(p);
  }

  private readonly checked = new Set<string>();

  /** Make an open directory owner-writable (a read-only 0555 dir of the old version); checked once per commit. */
  writable(rel: string): void {
    if (this.checked.has(rel)) return;
    this.checked.add(rel);
    const st = this.statDir(rel);
    if (st && (st.mode & 0o700) !== 0o700) {
      if (!this.madeWritable.has(rel)) this.madeWritable.set(rel, st.mode & 0o7777);
      this.chmodDir(rel, (st.mode & 0o7777) | 0o700);
    }
  }

  private statDir(rel: string): Stats | undefined {
    if (this.proc) {
      const fd = this.fds.get(rel);
      return fd === undefined ? undefined : fstatSync(fd);
    }
    return lstatOrUndefined(join(this.root, rel));
  }

  /** chmod an open directory through its handle. */
  chmodDir(rel: string, mode: number): void {
    if (this.dir(rel) === undefined) return;
    if (this.proc) fchmodSync(this.fds.get(rel)!, mode);
    else {
      const p = join(this.root, rel);
      if (lstatSync(p).isDirectory()) fchmodPath(p, mode);
    }
  }

  /** Set mode and mtime of a regular file without following a symlink in its place. */
  setFileMeta(rel: string, mode: number, mtimeSec: number): boolean {
    const p = this.at(rel);
    if (p === undefined) return false;
    let fd: number;
    try {
      fd = openSync(p, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
    } catch (err) {
      if (['ENOENT', 'ELOOP', 'ENXIO'].includes(code(err))) return false;
      if (code(err) !== 'EACCES') throw err;
      // A file its owner may not read (mode 0200): checked, then changed by path, at once.
      if (!lstatOrUndefined(p)?.isFile()) return false;
      chmodSync(p, mode);
      lutimesSync(p, mtimeSec, mtimeSec);
      return true;
    }
    try {
      if (!fstatSync(fd).isFile()) return false;
      fchmodSync(fd, mode);
      futimesSync(fd, mtimeSec, mtimeSec);
      return true;
    } finally {
      closeSync(fd);
    }
  }

  /** Remove a non-directory entry; false when it was not there. */
  unlink(rel: string): boolean {
    const [parent] = splitParent(rel);
    const p = this.at(rel);
    if (p === undefined) return false;
    this.writable(parent);
    try {
      unlinkSync(p);
      return true;
    } catch (err) {
      if (code(err) === 'ENOENT') return false;
      throw err;
    }
  }

  /** Remove whatever is at `rel` (a directory with everything below it), never following a link. */
  remove(rel: string, onFile?: (rel: string) => void): void {
    const st = this.lstat(rel);
    if (!st) return;
    if (!st.isDirectory()) {
      onFile?.(rel);
      this.unlink(rel);
      return;
    }
    if (this.dir(rel) === undefined) return;
    this.writable(rel);
    const listing = this.proc ? `/proc/self/fd/${this.fds.get(rel)!}` : join(this.root, rel);
    for (const name of readdirSync(listing)) this.remove(rel ? `${rel}/${name}` : name, onFile);
    this.rmdir(rel);
  }

  /** rmdir an empty directory; ENOENT is fine. */
  rmdir(rel: string): void {
    const [parent] = splitParent(rel);
    this.forget(rel);
    const p = this.at(rel);
    if (p === undefined) return;
    this.writable(parent);
    try {
      rmdirSync(p);
    } catch (err) {
      if (code(err) !== 'ENOENT') throw err;
    }
    this.madeWritable.delete(rel);
  }

  /** Drop cached handles of `rel` and everything below it. */
  forget(rel: string): void {
    for (const k of this.checked) if (k === rel || k.startsWith(`${rel}/`)) this.checked.delete(k);
    for (const [k, fd] of this.fds) {
      if (k !== '' && (k === rel || k.startsWith(`${rel}/`))) {
        closeSync(fd);
        this.fds.delete(k);
      }
    }
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

function lstatOrUndefined(p: string): Stats | undefined {
  try {
    // No exception for the common "not there": thousands of those are measurable.
    return lstatSync(p, { throwIfNoEntry: false });
  } catch (err) {
    if (['ENOENT', 'ENOTDIR', 'ELOOP'].includes(code(err))) return undefined;
    throw err;
  }
}

function fchmodPath(p: string, mode: number): void {
  const fd = openSync(p, DIR_FLAGS);
  try {
    fchmodSync(fd, mode);
  } finally {
    closeSync(fd);
  }
}
