// The commit journal: written (and fsynced) before the first change to the deploy directory,
// replayed by the next run if this one dies. Every step is idempotent, so replaying a step that
// already happened is harmless.
import { chmodSync, linkSync, mkdirSync, renameSync, rmSync, rmdirSync, unlinkSync, utimesSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { DirEntry } from '../manifest.js';
import { readJsonFile, writeFileAtomic } from '../state.js';
import type { AppliedVersion } from './target-state.js';

export interface Journal {
  format: 'kk-journal/1';
  target: string;
  applied: AppliedVersion;
  stagingDir: string;
  unlink: string[];
  rmdir: string[];
  mkdir: DirEntry[];
  /** [staged file name, target path] */
  rename: [string, string][];
  meta: { path: string; mode: number; mtime: number }[];
  chmodDirs: DirEntry[];
}

export async function readJournal(file: string): Promise<Journal | undefined> {
  const j = await readJsonFile<Journal>(file);
  return j?.format === 'kk-journal/1' ? j : undefined;
}

export async function writeJournal(file: string, j: Journal): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(j));
}

/** `utimes` with the manifest's integer milliseconds, landing inside that millisecond. */
export function mtimeArg(ms: number): number {
  return (ms + 0.5) / 1000;
}

export interface CommitHooks {
  /** Called before a target file is removed or replaced: a chance to keep its bytes. */
  beforeReplace?: (path: string) => void;
}

function ignoring(codes: string[], fn: () => void): void {
  try {
    fn();
  } catch (err) {
    if (!codes.includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
  }
}

/**
 * Carry out a journal against `root`; returns the directories whose entries it changed. Safe to
 * run again after a crash at any point. The steps
 * are synchronous system calls on purpose: thousands of renames cost microseconds each this
 * way, and nothing else should interleave with a commit anyway.
 */
export function runJournal(root: string, j: Journal, hooks: CommitHooks = {}): string[] {
  const abs = (p: string) => join(root, p);
  for (const p of j.unlink) {
    hooks.beforeReplace?.(p);
    ignoring(['ENOENT'], () => unlinkSync(abs(p)));
  }
  for (const p of j.rmdir) {
    // Contents the version lacks were unlinked above; rm covers a replayed, half-done state.
    try {
      rmdirSync(abs(p));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') rmSync(abs(p), { recursive: true, force: true });
      else if (code === 'ENOTDIR') unlinkSync(abs(p));
      else if (code !== 'ENOENT') throw err;
    }
  }
  for (const d of j.mkdir) {
    ignoring(['EEXIST'], () => mkdirSync(abs(d.path)));
    chmodSync(abs(d.path), d.mode);
  }
  const touched = new Set<string>();
  for (const [staged, p] of j.rename) {
    hooks.beforeReplace?.(p);
    // ENOENT: already renamed by the run that died.
    ignoring(['ENOENT'], () => renameSync(join(j.stagingDir, staged), abs(p)));
    touched.add(dirname(abs(p)));
  }
  for (const m of j.meta) {
    chmodSync(abs(m.path), m.mode);
    utimesSync(abs(m.path), mtimeArg(m.mtime), mtimeArg(m.mtime));
  }
  for (const d of j.chmodDirs) chmodSync(abs(d.path), d.mode);
  // Directories whose entries changed: the caller makes them durable in one batch.
  return [...touched];
}

/** Hard-link `src` into the file cache as `dst`, if possible; never fails the apply. */
export function keepFile(src: string, dst: string): void {
  ignoring(['EEXIST', 'ENOENT', 'EXDEV', 'EPERM', 'EMLINK'], () => linkSync(src, dst));
}
