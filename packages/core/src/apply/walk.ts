// Read the deploy directory as it is, without following symlinks, skipping ignored paths.
// Synchronous on purpose: a walk is tens of thousands of lstat calls, which cost microseconds
// each when made directly and far more through the async thread pool.
import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
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
}

const MAX_LISTED = 1000;

export function walkTarget(root: string, ig: Ignore, reserved: ReadonlySet<string>): TargetTree {
  const entries = new Map<string, TargetEntry>();
  let ignored = 0;
  const ignoredPaths: string[] = [];
  function visit(rel: string): boolean {
    let keepsIgnored = false;
    const names = readdirSync(rel ? join(root, rel) : root, { withFileTypes: true });
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
        const st = lstatSync(join(root, path));
        const entry: TargetEntry = { kind: 'dir', mode: st.mode & 0o1777, keepsIgnored: false };
        entries.set(path, entry);
        if (visit(path)) {
          entry.keepsIgnored = true;
          keepsIgnored = true;
        }
      } else if (d.isFile()) {
        const st = lstatSync(join(root, path));
        entries.set(path, { kind: 'file', size: st.size, mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs), ctimeMs: st.ctimeMs, ino: st.ino });
      } else {
        entries.set(path, { kind: 'other' });
      }
    }
    return keepsIgnored;
  }
  visit('');
  return { entries, ignored, ignoredPaths };
}
