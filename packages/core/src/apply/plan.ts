// The plan of a mirror-apply: what to write, re-stamp, delete and create so the deploy directory
// equals the manifest, leaving ignored paths alone. Computing it changes nothing.
import type { Ignore } from 'ignore';
import { join } from 'node:path';
import type { Digest } from '../digest.js';
import { KkError } from '../errors.js';
import type { Hasher } from '../hash/pool.js';
import type { DirEntry, FileEntry, Manifest } from '../manifest.js';
import { parentsOf } from '../paths.js';
import { isIgnored } from '../scan.js';
import { forEachLimit } from '../store.js';
import type { TargetTree } from './walk.js';
import type { PlacedFile } from './target-state.js';

export type WriteReason = 'add' | 'update' | 'replace';

export interface ApplyPlan {
  /** Files to stage and rename into place. */
  write: { file: FileEntry; reason: WriteReason }[];
  /** Same content, different mode or mtime: fixed in place. */
  meta: FileEntry[];
  unchanged: number;
  /** Files, symlinks and other non-directories to remove (not in the version, or in the way). */
  deleteFiles: string[];
  /** Directories to remove, deepest first. */
  deleteDirs: string[];
  /** Directories to create, outermost first. */
  makeDirs: DirEntry[];
  chmodDirs: DirEntry[];
  /** Content of target files we know (stat cache or hashing): seeds for the fetch. */
  known: Map<string, Digest>;
  /** Paths of `known` vouched for by the stat cache (stat unchanged since kk recorded the digest). */
  trusted: Set<string>;
  /** Manifest paths skipped because the ignore rules cover them. */
  ignoredInManifest: number;
  bytesToWrite: number;
  bytesHashed: number;
  /**
   * Files whose content differs from what kk last wrote there (`modified`) or that kk never
   * wrote (`added`), and that this plan would overwrite or delete. Only computed when asked.
   */
  localChanges: LocalChange[];
}

export interface LocalChange {
  path: string;
  change: 'modified' | 'added';
}

/**
 * How existing content is treated (seed 004): `full` compares every file and removes what the
 * version lacks; `skip-existing` adds what is missing and leaves every existing path as it is,
 * unread, deleting nothing. (Event-driven pulls are `full` over the listed paths only.)
 */
export type PlanMode = 'full' | 'skip-existing';

export interface PlanSummary {
  filesAdded: number;
  filesChanged: number;
  filesDeleted: number;
  filesUnchanged: number;
  filesMetaOnly: number;
  dirsCreated: number;
  dirsDeleted: number;
  bytesToWrite: number;
}

export function summarizePlan(p: ApplyPlan): PlanSummary {
  return {
    filesAdded: p.write.filter((w) => w.reason === 'add').length,
    filesChanged: p.write.filter((w) => w.reason !== 'add').length,
    filesDeleted: p.deleteFiles.length,
    filesUnchanged: p.unchanged,
    filesMetaOnly: p.meta.length,
    dirsCreated: p.makeDirs.length,
    dirsDeleted: p.deleteDirs.length,
    bytesToWrite: p.bytesToWrite,
  };
}

export function planIsEmpty(p: ApplyPlan): boolean {
  return !p.write.length && !p.meta.length && !p.deleteFiles.length && !p.deleteDirs.length && !p.makeDirs.length && !p.chmodDirs.length;
}

const depth = (p: string) => p.split('/').length;

/** PATH_MAX of Linux, counting the terminating NUL. */
export const PATH_MAX = 4096;

/** Every path must fit the platform's limits once joined to the target, checked before any change. */
function checkPathLengths(root: string, paths: Iterable<string>): void {
  const rootBytes = Buffer.byteLength(root);
  for (const p of paths) {
    // A UTF-16 unit is at most 3 UTF-8 bytes: most paths need no byte count at all.
    if (rootBytes + 1 + p.length * 3 < PATH_MAX) continue;
    const n = rootBytes + 1 + Buffer.byteLength(p);
    if (n >= PATH_MAX) {
      throw new KkError('UNSAFE_PATH', `${p.slice(0, 60)}... would be a ${n}-byte path in ${root}, longer than the system allows (${PATH_MAX - 1})`, {
        hint: 'deploy to a shorter directory path, or shorten the paths in the build; nothing was changed',
        details: { path: p, bytes: n },
      });
    }
  }
}

export async function computePlan(args: {
  manifest: Manifest;
  tree: TargetTree;
  root: string;
  ig: Ignore;
  placed: Map<string, PlacedFile>;
  verify: boolean;
  hasher: Hasher;
  mode?: PlanMode;
  /** The manifest kk last applied here; with `detectLocalChanges`, what "changed locally" is measured against. */
  previous?: Manifest;
  detectLocalChanges?: boolean;
}): Promise<ApplyPlan> {
  const { manifest, tree, ig, placed } = args;
  const skipExisting = args.mode === 'skip-existing';
  const files = manifest.files.filter((f) => !isIgnored(ig, f.path, false));
  const ignoredInManifest = manifest.files.length - files.length;
  const wantedFiles = new Map(files.map((f) => [f.path, f]));
  const wantedDirs = new Map<string, number>();
  for (const d of manifest.dirs) if (!isIgnored(ig, d.path, true)) wantedDirs.set(d.path, d.mode);
  // Parents are implied: a directory or file listed without its parent still gets one. Listed
  // directories first, completely; then a file's walk up stops at the first directory present.
  for (const p of [...wantedDirs.keys()]) for (const q of parentsOf(p)) if (!wantedDirs.has(q)) wantedDirs.set(q, 0o755);
  for (const f of files) {
    for (let i = f.path.lastIndexOf('/'); i > 0; i = f.path.lastIndexOf('/', i - 1)) {
      const q = f.path.slice(0, i);
      if (wantedDirs.has(q)) break;
      wantedDirs.set(q, 0o755);
    }
  }
  checkPathLengths(args.root, [...wantedFiles.keys(), ...wantedDirs.keys()]);

  const plan: ApplyPlan = {
    write: [],
    meta: [],
    unchanged: 0,
    deleteFiles: [],
    deleteDirs: [],
    makeDirs: [],
    chmodDirs: [],
    known: new Map(),
    trusted: new Set(),
    ignoredInManifest,
    bytesToWrite: 0,
    bytesHashed: 0,
    localChanges: [],
  };

  if (skipExisting) {
    // Never read, compare, re-stamp or delete anything that is there: only what is missing is added.
    for (const f of files) {
      if (tree.entries.has(f.path)) plan.unchanged++;
      else {
        plan.write.push({ file: f, reason: 'add' });
        plan.bytesToWrite += f.size;
      }
    }
    for (const [path, mode] of wantedDirs) if (!tree.entries.has(path)) plan.makeDirs.push({ path, mode });
    plan.makeDirs.sort((a, b) => depth(a.path) - depth(b.path) || (a.path < b.path ? -1 : 1));
    return plan;
  }
  const before = args.detectLocalChanges && args.previous ? new Map(args.previous.files.map((f) => [f.path, f])) : undefined;

  // Content of existing files: trusted from the stat cache, else hashed when the size matches.
  const toHash: string[] = [];
  for (const [path, e] of tree.entries) {
    if (e.kind !== 'file') continue;
    const pc = placed.get(path);
    if (!args.verify && pc && pc.size === e.size && pc.mtimeMs === e.mtimeMs && pc.ctimeMs === e.ctimeMs && pc.ino === e.ino) {
      plan.known.set(path, pc.sha256);
      plan.trusted.add(path);
    } else if (wantedFiles.get(path)?.size === e.size || (before && before.get(path)?.size === e.size)) {
      toHash.push(path);
    }
  }
  const batches: string[][] = [];
  for (let i = 0; i < toHash.length; i += 64) batches.push(toHash.slice(i, i + 64));
  await forEachLimit(batches, args.hasher.threads * 2, async (batch) => {
    const res = await args.hasher.hashFiles(batch.map((p) => join(args.root, p)), manifest.chunking);
    res.forEach((r, i) => {
      if ('sha256' in r) {
        plan.known.set(batch[i]!, r.sha256 as Digest);
        plan.bytesHashed += r.size;
      }
    });
  });

  for (const f of files) {
    const e = tree.entries.get(f.path);
    if (!e) {
      plan.write.push({ file: f, reason: 'add' });
    } else if (e.kind === 'file' && e.size === f.size && plan.known.get(f.path) === f.sha256) {
      if ((e.mode & 0o7777) !== f.mode || e.mtimeMs !== f.mtime) plan.meta.push(f);
      else plan.unchanged++;
      continue;
    } else {
      plan.write.push({ file: f, reason: e.kind === 'file' ? 'update' : 'replace' });
    }
    plan.bytesToWrite += f.size;
  }

  for (const [path, e] of tree.entries) {
    if (e.kind === 'dir') {
      if (wantedDirs.has(path)) continue;
      if (e.keepsIgnored) {
        if (wantedFiles.has(path)) {
          throw new KkError('TARGET_CONFLICT', `${join(args.root, path)} must become a file but holds ignored content`, {
            hint: 'move the ignored files away or change the ignore rules',
          });
        }
        continue;
      }
      plan.deleteDirs.push(path);
    } else if (!wantedFiles.has(path) || e.kind === 'other' || wantedDirs.has(path)) {
      plan.deleteFiles.push(path);
    }
  }
  plan.deleteDirs.sort((a, b) => depth(b) - depth(a) || (a < b ? -1 : 1));

  if (before) {
    // Only what this plan would overwrite or delete matters: a local change the version agrees with is no loss.
    const lost = [...plan.write.filter((w) => w.reason !== 'add').map((w) => w.file.path), ...plan.deleteFiles];
    for (const path of lost) {
      const e = tree.entries.get(path);
      const was = before.get(path);
      if (!e) continue;
      if (!was) plan.localChanges.push({ path, change: 'added' });
      else if (e.kind !== 'file' || e.size !== was.size || plan.known.get(path) !== was.sha256) plan.localChanges.push({ path, change: 'modified' });
    }
    plan.localChanges.sort((a, b) => (a.path < b.path ? -1 : 1));
  }

  for (const [path, mode] of wantedDirs) {
    const e = tree.entries.get(path);
    if (e?.kind === 'dir') {
      // A directory its owner cannot write is opened up while its entries change: the journal
      // carries its mode so a replay after a crash closes it again.
      if (e.mode !== mode || (mode & 0o700) !== 0o700) plan.chmodDirs.push({ path, mode });
    } else {
      plan.makeDirs.push({ path, mode });
    }
  }
  plan.makeDirs.sort((a, b) => depth(a.path) - depth(b.path) || (a.path < b.path ? -1 : 1));
  return plan;
}
