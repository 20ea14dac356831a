// Read the deploy directory as it is, without following symlinks, skipping ignored paths.
// Synchronous on purpose: a walk is tens of thousands of lstat calls, which cost microseconds
// each when made directly and far more through the async thread pool.
import { lstatSync, readdirSync } from 'node:fs';
import type { Ignore } from 'ignore';
import { isIgnored } from '../scan.js';

export type TargetEntry =
  | { kind: 'file'; size: number; mode: number; mtimeMs: number; ctimeMs: number; ino: number }
  | { kind: 'dir'; mode: number; /** Holds ignored entries somewhere below. */ keepsIgnored: boolean }
  | { kind: 'other' };

export interface TargetTree {
  entries: Map<string, TargetEntry>;
  /** Ignored paths found (never touched). */
  ignored: number;
  /** The outermost ignored paths (at most MAX_LISTED), for `kk diff` to say what protects what. */
  ignoredPaths: string[];
  /** Directories at the depth limit, left unread (their content is neither known nor touched). */
  tooDeep: string[];
  /** Directories that could not be read (EACCES): the scan did not complete. */
  unreadable: string[];
  /** The directory the walk started from holds ignored or unread entries somewhere below. */
  keepsIgnoredRoot?: boolean;
}

export interface WalkOptions {
  /** Directories this deep (the root is 0) are not read: what lies in them is left alone. */
  maxDepth?: number;
  /** Record unreadable directories in `unreadable` instead of failing. */
  tolerateUnreadable?: boolean;
  /** Walk only below this directory (relative to the root, which it must be under); default the root. */
  from?: string;
  /** Add to these entries instead of a new map. */
  into?: Map<string, TargetEntry>;
}

const MAX_LISTED = 1000;

export function walkTarget(rootPath: string, ig: Ignore, reserved: ReadonlySet<string>, opts: WalkOptions = {}): TargetTree {
  // Entries are named by plain concatenation (path.join normalizes every one; these need none).
  const root = rootPath === '/' ? '' : rootPath.replace(/\/+$/, '');
  const entries = opts.into ?? new Map<string, TargetEntry>();
  let ignored = 0;
  const ignoredPaths: string[] = [];
  const tooDeep: string[] = [];
  const unreadable: string[] = [];
  const maxDepth = opts.maxDepth ?? Infinity;
  function visit(rel: string, depth: number): boolean {
    let keepsIgnored = false;
    if (depth >= maxDepth) {
      tooDeep.push(rel);
      return true;
    }
    let names: import('node:fs').Dirent[];
    try {
      names = readdirSync(rel ? `${root}/${rel}` : rootPath, { withFileTypes: true });
    } catch (err) {
      if (!rel || !opts.tolerateUnreadable || (err as NodeJS.ErrnoException).code !== 'EACCES') throw err;
      unreadable.push(rel);
      return true;
    }
    for (const d of names) {
      const path = rel ? `${rel}/${d.name}` : d.name;
      if (!rel && reserved.has(d.name)) continue;
      if (isIgnored(ig, path, d.isDirectory())) {
        ignored++;
        if (ignoredPaths.length < MAX_LISTED) ignoredPaths.push(d.isDirectory() ? `${path}/` : path);
        keepsIgnored = true;
        continue;
      }
      if (d.isDirectory()) {
        const st = lstatSync(`${root}/${path}`);
        const entry: TargetEntry = { kind: 'dir', mode: st.mode & 0o1777, keepsIgnored: false };
        entries.set(path, entry);
        if (visit(path, depth + 1)) {
          entry.keepsIgnored = true;
          keepsIgnored = true;
        }
      } else if (d.isFile()) {
        const st = lstatSync(`${root}/${path}`);
        entries.set(path, { kind: 'file', size: st.size, mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs), ctimeMs: st.ctimeMs, ino: st.ino });
      } else {
        entries.set(path, { kind: 'other' });
      }
    }
    return keepsIgnored;
  }
  const from = opts.from ?? '';
  const keepsIgnoredRoot = visit(from, from ? from.split('/').length : 0);
  return { entries, ignored, ignoredPaths, tooDeep, unreadable, keepsIgnoredRoot };
}
