// The commit journal: written (and fsynced) before the first change to the deploy directory,
// replayed by the next run if this one dies. Every step looks at what the path holds now and
// does only what is still missing, whatever kind of change it is (add, replace, delete, mode,
// file <-> directory), so a replay can start from any point, as often as it takes.
// Order: directories, then files into place, then deletes, then modes, so nothing of the old
// version is removed before the new one is whole, and read-only directories get their modes
// only after their entries are placed (issue 10 items 16, 19, 22).
import { linkSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { KkError } from '../errors.js';
import type { DirEntry } from '../manifest.js';
import { readJsonFile, writeFileAtomic } from '../state.js';
import { TargetDirs } from './dirfd.js';
import type { AppliedVersion } from './target-state.js';

export interface Journal {
  format: 'kk-journal/2';
  target: string;
  applied: AppliedVersion;
  stagingDir: string;
  /** Non-directories to remove (the version lacks them). */
  unlink: string[];
  /** Directories to remove, deepest first. */
  rmdir: string[];
  /** Directories to create, outermost first. */
  mkdir: DirEntry[];
  /** [staged file name, target path] */
  rename: [string, string][];
  meta: { path: string; mode: number; mtime: number }[];
  /** Final modes of directories: created, changed, or read-only ones whose entries change. */
  chmodDirs: DirEntry[];
}

export async function readJournal(file: string): Promise<Journal | undefined> {
  const j = await readJsonFile<Journal | { format: 'kk-journal/1' } & Omit<Journal, 'format'>>(file);
  if (!j) return undefined;
  // A journal of the earlier format has the same steps: replayed the same (idempotent) way.
  if (j.format === 'kk-journal/1') return { ...j, format: 'kk-journal/2' };
  return j.format === 'kk-journal/2' ? j : undefined;
}

export async function writeJournal(file: string, j: Journal): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(j));
}

/** `utimes` with the manifest's integer milliseconds, landing inside that millisecond. */
export function mtimeArg(ms: number): number {
  return (ms + 0.5) / 1000;
}

export interface CommitHooks {
  /** Called before a target file is removed or replaced, with a way to get a no-follow path to it: a chance to keep its bytes. */
  beforeReplace?: (path: string, at: () => string | undefined) => void;
}

const parentOf = (p: string) => {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
};

/**
 * Carry out a journal against `root` (the real path of the target); returns the directories
 * whose entries it changed. Safe to run again after a crash at any point.
 * The steps are synchronous system calls on purpose: thousands of renames cost microseconds each
 * this way, and nothing else should interleave with a commit anyway.
 */
export function runJournal(root: string, j: Journal, hooks: CommitHooks = {}): string[] {
  const dirs = new TargetDirs(root);
  try {
    return commit(dirs, j, hooks);
  } catch (err) {
    if (err instanceof KkError) throw err;
    throw new KkError('TARGET_CONFLICT', `the commit in ${root} could not finish: ${(err as Error).message}`, {
      cause: err,
      hint: 'fix the cause, then pull again: the next run finishes the commit; if it cannot, `kk pull --repair` plans again from the directory as it is',
      details: { target: root },
    });
  } finally {
    dirs.close();
  }
}

function commit(dirs: TargetDirs, j: Journal, hooks: CommitHooks): string[] {
  const wantDirs = new Set(j.mkdir.map((d) => d.path));
  const wantFiles = new Set(j.rename.map((r) => r[1]));
  const keep = (rel: string) => hooks.beforeReplace?.(rel, () => dirs.at(rel));
  const touched = new Set<string>();

  // 1. Directories of the version (a file of the old version in the way is removed first).
  for (const d of j.mkdir) {
    const st = dirs.lstat(d.path);
    if (st && !st.isDirectory()) keep(d.path);
    dirs.dir(d.path, true);
  }

  // 2. Files into place. A staged file that is gone was renamed by the run that died. The common
  // case costs one rename: what is in the way is looked at only when the rename says so.
  const staging = new TargetDirs(j.stagingDir);
  try {
    for (const [staged, p] of j.rename) {
      const parent = parentOf(p);
      dirs.dir(parent, true);
      dirs.writable(parent);
      keep(p);
      const from = staging.at(staged)!;
      for (let attempt = 0; ; attempt++) {
        try {
          renameSync(from, dirs.at(p)!);
          break;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          const st = dirs.lstat(p);
          if (code === 'ENOENT' && !staging.lstat(staged)) {
            if (st?.isFile()) break;
            throw new KkError('TARGET_CONFLICT', `cannot finish the interrupted commit in ${dirs.root}: the staged copy of ${p} is gone`, {
              hint: 'run `kk pull --repair`: it drops the journal and plans again from the directory as it is',
              details: { path: p, staged: join(j.stagingDir, staged) },
            });
          }
          // A directory of the old version where the file goes (or a parent swapped away): clear it, once.
          if (attempt > 0 || !['EISDIR', 'ENOTEMPTY', 'EEXIST', 'ENOTDIR', 'ENOENT'].includes(code ?? '')) throw err;
          if (st?.isDirectory()) dirs.remove(p, keep);
          dirs.forget(parent);
          dirs.dir(parent, true);
          dirs.writable(parent);
        }
      }
      touched.add(join(dirs.root, parent));
    }
  } finally {
    staging.close();
  }

  // 3. What the version lacks: files, then directories deepest first.
  for (const p of j.unlink) {
    const st = dirs.lstat(p);
    if (!st) continue;
    if (st.isDirectory()) {
      if (!wantDirs.has(p)) dirs.remove(p, keep);
    } else if (!(wantFiles.has(p) && st.isFile())) {
      keep(p);
      dirs.unlink(p);
    }
    touched.add(join(dirs.root, parentOf(p)));
  }
  for (const p of j.rmdir) {
    if (wantDirs.has(p)) continue;
    const st = dirs.lstat(p);
    if (!st) continue;
    if (!st.isDirectory()) {
      if (!wantFiles.has(p)) dirs.unlink(p);
    } else {
      dirs.remove(p, keep);
    }
  }

  // 4. Modes and mtimes, directories last (a read-only directory is closed only now).
  for (const m of j.meta) dirs.setFileMeta(m.path, m.mode, mtimeArg(m.mtime));
  const finalModes = new Map<string, number>();
  for (const [p, mode] of dirs.madeWritable) finalModes.set(p, mode);
  for (const d of j.mkdir) finalModes.set(d.path, d.mode);
  for (const d of j.chmodDirs) finalModes.set(d.path, d.mode);
  // Deepest first: a parent's mode may take away the right to change its children.
  const depth = (p: string) => (p === '' ? 0 : p.split('/').length);
  const order = [...finalModes.keys()].sort((a, b) => depth(b) - depth(a));
  for (const p of order) dirs.chmodDir(p, finalModes.get(p)!);
  // Directories whose entries changed: the caller makes them durable in one batch.
  return [...touched];
}

/** Hard-link `src` (a no-follow path) into the file cache as `dst`, if possible; never fails the apply. */
export function keepFile(src: string, dst: string): void {
  try {
    linkSync(src, dst);
  } catch (err) {
    if (!['EEXIST', 'ENOENT', 'EXDEV', 'EPERM', 'EMLINK', 'ENOSPC'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
  }
}
