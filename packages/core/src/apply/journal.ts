// The commit journal: written (and fsynced) before the first change to the deploy directory,
// replayed by the next run if this one dies. Every step is idempotent, so replaying a step that
// already happened is harmless.
import { chmod, link, mkdir, open, rename, rm, rmdir, unlink, utimes } from 'node:fs/promises';
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
  beforeReplace?: (path: string) => Promise<void>;
}

const ignoreCodes = (...codes: string[]) => (err: NodeJS.ErrnoException) => {
  if (!codes.includes(err.code ?? '')) throw err;
};

/** Carry out a journal against `root`. Safe to run again after a crash at any point. */
export async function runJournal(root: string, j: Journal, hooks: CommitHooks = {}): Promise<void> {
  const abs = (p: string) => join(root, p);
  for (const p of j.unlink) {
    await hooks.beforeReplace?.(p);
    await unlink(abs(p)).catch(ignoreCodes('ENOENT'));
  }
  for (const p of j.rmdir) {
    // Contents the version lacks were unlinked above; rm covers a replayed, half-done state.
    await rmdir(abs(p)).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return;
      if (err.code === 'ENOTEMPTY' || err.code === 'EEXIST') await rm(abs(p), { recursive: true, force: true });
      else if (err.code === 'ENOTDIR') await unlink(abs(p));
      else throw err;
    });
  }
  for (const d of j.mkdir) {
    await mkdir(abs(d.path)).catch(ignoreCodes('EEXIST'));
    await chmod(abs(d.path), d.mode);
  }
  const touched = new Set<string>();
  for (const [staged, p] of j.rename) {
    await hooks.beforeReplace?.(p);
    try {
      await rename(join(j.stagingDir, staged), abs(p));
    } catch (err) {
      // Already renamed by the run that died.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    touched.add(dirname(abs(p)));
  }
  for (const m of j.meta) {
    await chmod(abs(m.path), m.mode);
    await utimes(abs(m.path), mtimeArg(m.mtime), mtimeArg(m.mtime));
  }
  for (const d of j.chmodDirs) await chmod(abs(d.path), d.mode);
  // Make the renames durable.
  for (const dir of touched) {
    const fh = await open(dir, 'r');
    await fh.sync().catch(() => {});
    await fh.close();
  }
}

/** Hard-link `src` into the file cache as `dst`, if possible; never fails the apply. */
export async function keepFile(src: string, dst: string): Promise<void> {
  await link(src, dst).catch(() => {});
}
