// Walk a build directory into the entries a manifest will list: regular files and directories,
// with ignore rules (gitignore syntax) applied and anything unsafe refused.
import { lstatSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import ignore, { type Ignore } from 'ignore';
import type { Stats } from 'node:fs';
import { KkError } from './errors.js';
import type { SymlinkPolicy } from './config.js';
import { assertSafePath, comparePaths } from './paths.js';
import { RESERVED_TOP_LEVEL } from './manifest.js';

export interface ScannedFile {
  path: string;
  abs: string;
  size: number;
  mode: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  dev: number;
}

export interface ScannedDir {
  path: string;
  mode: number;
}

export interface ScanResult {
  files: ScannedFile[];
  dirs: ScannedDir[];
  bytes: number;
  ignored: number;
  skippedSymlinks: number;
}

export interface ScanOptions {
  ignore?: string[];
  symlinks?: SymlinkPolicy;
  /** Deepest allowed nesting; deeper trees (or symlink loops when following) are an error. */
  maxDepth?: number;
}

export const DEFAULT_MAX_DEPTH = 64;

export function makeIgnore(patterns: readonly string[] = []): Ignore {
  const ig = ignore().add([...patterns]);
  if (!patterns.length) NO_RULES.add(ig);
  return ig;
}

/** Matchers made from no patterns: asking them is skipped (it costs a path check per entry). */
const NO_RULES = new WeakSet<Ignore>();

/** Whether a relative path (a directory when `isDir`) is ignored, or lies under an ignored dir. */
export function isIgnored(ig: Ignore, path: string, isDir: boolean): boolean {
  if (NO_RULES.has(ig)) return false;
  return ig.ignores(isDir ? `${path}/` : path);
}

export async function scanTree(root: string, opts: ScanOptions = {}): Promise<ScanResult> {
  const policy = opts.symlinks ?? 'error';
  const maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
  const ig = makeIgnore(opts.ignore);
  let rootStat: Stats;
  try {
    rootStat = statSync(root);
  } catch (cause) {
    throw new KkError('SOURCE_INVALID', `cannot read ${root}: ${(cause as Error).message}`, { cause });
  }
  if (!rootStat.isDirectory()) throw new KkError('SOURCE_INVALID', `${root} is not a directory`);

  // Loaded on first use: a pull never scans a source tree, and fast-glob costs ~0.1-0.4 s to load.
  const fg = (await import('fast-glob')).default;
  // Synchronous on purpose: tens of thousands of lstat calls are microseconds each this way.
  const entries = fg.sync('**', {
    cwd: root,
    dot: true,
    onlyFiles: false,
    followSymbolicLinks: policy === 'follow',
    deep: maxDepth + 1,
    objectMode: true,
    suppressErrors: false,
  }) as unknown as { path: string; dirent: import('node:fs').Dirent }[];

  const files: ScannedFile[] = [];
  const dirs: ScannedDir[] = [];
  let ignored = 0;
  let skippedSymlinks = 0;
  let bytes = 0;
  for (const e of entries) {
    const rel = e.path;
    assertSafePath(rel);
    if (rel.split('/').length > maxDepth) {
      throw new KkError('SOURCE_INVALID', `${join(root, rel)} is nested deeper than ${maxDepth} levels`, {
        hint: policy === 'follow' ? 'a symlink loop? use symlinks: error or skip' : 'flatten the tree or raise the depth limit',
      });
    }
    const abs = join(root, rel);
    let st = lstatSync(abs);
    if (st.isSymbolicLink()) {
      if (policy === 'error') {
        throw new KkError('SOURCE_INVALID', `${abs} is a symlink; kk does not store symlinks`, {
          hint: 'set `symlinks: skip` or `symlinks: follow` in .kkartifact.yml, or remove the link',
        });
      }
      if (policy === 'skip') {
        skippedSymlinks++;
        continue;
      }
      try {
        st = statSync(abs);
      } catch (cause) {
        const to = (() => {
          try {
            return readlinkSync(abs);
          } catch {
            return '?';
          }
        })();
        throw new KkError('SOURCE_INVALID', `${abs} is a symlink to ${to}, which cannot be followed (${(cause as NodeJS.ErrnoException).code ?? 'error'})`, {
          cause,
          hint: 'fix or remove the dangling link, or set `symlinks: skip` in .kkartifact.yml',
          details: { path: abs, link: to },
        });
      }
    }
    const isDir = st.isDirectory();
    if (isIgnored(ig, rel, isDir)) {
      ignored++;
      continue;
    }
    if (rel === RESERVED_TOP_LEVEL || rel.startsWith(`${RESERVED_TOP_LEVEL}/`)) {
      throw new KkError('SOURCE_INVALID', `${abs}: the top-level name ${RESERVED_TOP_LEVEL} is reserved for kk's staging`, {
        hint: `rename it, or add /${RESERVED_TOP_LEVEL} to ignore in .kkartifact.yml`,
        details: { path: rel },
      });
    }
    if (isDir) {
      dirs.push({ path: rel, mode: st.mode & 0o1777 });
    } else if (st.isFile()) {
      files.push({
        path: rel,
        abs,
        size: st.size,
        mode: st.mode & 0o777,
        mtimeMs: Math.floor(st.mtimeMs),
        ctimeMs: st.ctimeMs,
        ino: st.ino,
        dev: st.dev,
      });
      bytes += st.size;
    } else {
      throw new KkError('SOURCE_INVALID', `${abs} is not a regular file or directory (device, socket or fifo)`, {
        hint: 'remove it or add it to ignore in .kkartifact.yml',
      });
    }
  }
  files.sort((a, b) => comparePaths(a.path, b.path));
  dirs.sort((a, b) => comparePaths(a.path, b.path));
  return { files, dirs, bytes, ignored, skippedSymlinks };
}
