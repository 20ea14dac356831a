// Pull = mirror-apply (DESIGN 7): make a deploy directory hold exactly one version's files, in
// place. Stage every new or changed file completely (seeded from local files where possible,
// fetched from the store otherwise, every chunk and every whole file verified), then commit
// through a journal whose every change goes through no-follow directory handles.
import { constants as fsConstants, existsSync, lstatSync, readdirSync, statfsSync, type Stats } from 'node:fs';
import { copyFile, lstat, mkdir, open, readdir, realpath, rm, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { type Digest, digestHex } from '../digest.js';
import { KkError } from '../errors.js';
import type { Hasher, StageFileRequest } from '../hash/pool.js';
import { makeDurable } from '../durability.js';
import { type FileEntry, type Manifest, RESERVED_TOP_LEVEL, fileChunks } from '../manifest.js';
import { assertAppName, assertProjectName, assertVersionSpec } from '../names.js';
import { assertSafePath, parentsOf } from '../paths.js';
import { type ProgressCallback, phaseReporter } from '../progress.js';
import { isIgnored, makeIgnore } from '../scan.js';
import { type Store, batches, forEachLimit } from '../store.js';
import { type ApplyPlan, type LocalChange, type PlanSummary, computePlan, planIsEmpty, summarizePlan } from './plan.js';
import { PAUSE_FILE, assertNotPaused, readLocalPause } from './pause.js';
import { type AppliedVersion, type PlacedFile, TargetState } from './target-state.js';
import { type Journal, keepFile, mtimeArg, readJournal, runJournal, writeJournal } from './journal.js';
import { TargetDirs } from './dirfd.js';
import { type TargetEntry, type TargetTree, walkTarget } from './walk.js';

/**
 * How a pull treats the directory (seed 004). `full` (the default): scan it, make it equal the
 * version, and remove what the version lacks only when the scan completed. `skip-existing`: scan
 * it and add what is missing, never reading, comparing or deleting what is there (an overlay).
 * `events`: apply only `paths` (changed paths reported by someone else), no scan.
 */
export type PullMode = 'full' | 'skip-existing' | 'events';
export const PULL_MODES: readonly PullMode[] = ['full', 'skip-existing', 'events'];

/** Directories nested deeper than this are neither scanned nor written (seed 004), with a warning. */
export const DEFAULT_PULL_MAX_DEPTH = 25;

/** A store, or a function that opens one only when a chunk must come from it. */
export type StoreSource = Store | (() => Promise<Store>);

export interface PullOptions {
  store?: StoreSource;
  hasher: Hasher;
  project: string;
  app: string;
  /** A version name, `latest`, or a channel such as `promoted`. */
  version?: string;
  /** Apply this manifest instead of resolving `version` in the store (rollback does). */
  manifest?: { manifest: Manifest; digest: Digest };
  /** The deploy directory. */
  target: string;
  stateDir?: string;
  /** gitignore-syntax patterns: matching paths in the target are never touched (with the version's own rules). */
  ignore?: string[];
  /** Allow taking over a non-empty directory kk has never managed. */
  adopt?: boolean;
  /**
   * Apply even when the directory holds another app, the version is empty, or the target path is
   * a symlink that now leads elsewhere than the directory kk manages under it.
   */
  force?: boolean;
  /** Drop an interrupted commit's journal and plan again from the directory as it is. */
  repair?: boolean;
  /** Refuse (MAX_DELETE) when more files than this would be deleted. */
  maxDelete?: number;
  dryRun?: boolean;
  /** Rehash every file in the target instead of trusting the stat cache. */
  verify?: boolean;
  /** Parallel chunk fetches and copies. Default 8. */
  concurrency?: number;
  /** fsync staged files before the commit. Default true. */
  fsync?: boolean;
  /** Versions before the current one whose replaced files are kept for offline rollback. Default 1. */
  cacheVersions?: number;
  /** Upper bound on the bytes the cache of replaced files holds by itself. Default unlimited (within cacheVersions). */
  cacheMaxBytes?: number;
  onProgress?: ProgressCallback;
  /** Command name for the lock file. */
  command?: string;
  /** Who pulls, reported to stores that keep an audit log. */
  agent?: string;
  /** Default `full`. */
  mode?: PullMode;
  /** With mode `events`: the changed paths (relative to the target; a directory means all below it). */
  paths?: string[];
  /** Directories this deep (the target is 0) are not read and nothing is applied inside them. Default 25. */
  maxDepth?: number;
  /**
   * `fail`: refuse (TARGET_CONFLICT, nothing applied) when the pull would overwrite or delete a
   * file whose content differs from what kk last wrote there, or that kk never wrote. Default
   * `overwrite` (a mirror makes the directory equal the version).
   */
  onLocalChange?: 'fail' | 'overwrite';
}

/** Paths the ignore rules protect, and by which rule (`kk diff` shows them). */
export interface Protection {
  rules: { pattern: string; from: 'local' | 'version' }[];
  /** Outermost protected paths found in the directory (a directory ends in `/`), at most 100. */
  paths: { path: string; rule: string; from: 'local' | 'version' }[];
  total: number;
}

export interface PullResult {
  project: string;
  app: string;
  version: string;
  manifest: Digest;
  target: string;
  /** The version the directory held before, if kk knew it. */
  previous?: string;
  dryRun: boolean;
  /** Nothing differed: the directory already held the version. */
  upToDate: boolean;
  plan: PlanSummary;
  /** Paths by change. */
  paths: { added: string[]; changed: string[]; deleted: string[]; metaOnly: string[] };
  protected: Protection;
  chunksFetched: number;
  /** Bytes received from the store (as stored, maybe compressed). */
  bytesFetched: number;
  /** Uncompressed size of the fetched chunks. */
  bytesFetchedRaw: number;
  /** Chunks rebuilt from a small delta against a chunk already on this machine. */
  chunksFromDeltas: number;
  chunksSeeded: number;
  /** Bytes copied from files already on this machine. */
  bytesSeeded: number;
  /** Bytes read to compare existing files (no stat cache, or --verify). */
  bytesHashed: number;
  /** An interrupted earlier apply was finished first. */
  recovered: boolean;
  durationMs: number;
  /** How the directory was treated (the `mode` option). */
  syncMode: PullMode;
  /** Files changed locally since kk wrote them that this pull overwrites or deletes (or would: dry run). */
  localChanges: LocalChange[];
  /** Things the user should know that did not stop the pull (depth limit, an incomplete scan). */
  warnings: string[];
}

/** The reserved in-target staging directory, used only when the state dir is on another device. */
export const IN_TARGET_STAGING = RESERVED_TOP_LEVEL;

interface Seed {
  abs: string;
  offset: number;
  size: number;
  /**
   * The file's stat still equals what kk recorded when it placed (or hashed) it: its bytes are
   * those, and copies from it need no second hash (the staged file's digest is still checked).
   */
  trusted?: boolean;
}

async function openStore(s: StoreSource | undefined): Promise<Store> {
  if (!s) throw new KkError('NOT_FOUND', 'a chunk is not available locally and no store was given', { hint: 'pass --store' });
  return typeof s === 'function' ? s() : s;
}

/**
 * The deploy directory, resolved once: `given` as spelled (absolute), `real` with every symlink
 * resolved (what state is keyed by), and whether it exists yet.
 */
export async function resolveTarget(path: string): Promise<{ given: string; real: string; exists: boolean }> {
  const given = resolve(path);
  try {
    const real = await realpath(given);
    if (!(await stat(real)).isDirectory()) {
      throw new KkError('TARGET_CONFLICT', `${given} is not a directory`, { hint: 'give the deploy directory with --path' });
    }
    return { given, real, exists: true };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (await lstat(given).then((s) => s.isSymbolicLink(), () => false)) {
    throw new KkError('TARGET_CONFLICT', `${given} is a symlink to a directory that does not exist`, { hint: 'fix or remove the link, then pull again' });
  }
  // Not there yet: the real path of its nearest existing ancestor plus the rest.
  let head = given;
  const rest: string[] = [];
  while (head !== dirname(head)) {
    rest.unshift(basename(head));
    head = dirname(head);
    const real = await realpath(head).catch(() => undefined);
    if (real) return { given, real: join(real, ...rest), exists: false };
  }
  return { given, real: given, exists: false };
}

/** Finish a commit that a killed run started. Returns whether there was one. */
async function recover(state: TargetState): Promise<boolean> {
  const j = await readJournal(state.journalFile);
  if (!j) return false;
  await makeDurable(state.target, runJournal(state.target, j));
  await state.recordApplied(j.applied);
  // Stats of half-committed files are unknown: the next plan hashes instead of trusting them.
  await state.clearStat();
  await unlink(state.journalFile).catch(() => {});
  await removeStaging(state);
  return true;
}

/** Staging left by this or an earlier run (killed, out of space): in the state dir, or in the target. */
async function removeStaging(state: TargetState): Promise<void> {
  await rm(state.stagingDir, { recursive: true, force: true });
  if (!existsSync(state.target)) return;
  const dirs = new TargetDirs(state.target);
  try {
    const st = dirs.lstat(IN_TARGET_STAGING);
    if (!st) return;
    if (!st.isDirectory() || dirs.dir(IN_TARGET_STAGING) === undefined) {
      dirs.remove(IN_TARGET_STAGING);
      return;
    }
    // A local pause record lives there too: it stays.
    const names = readdirSync(dirs.handle(IN_TARGET_STAGING));
    for (const n of names) if (n !== PAUSE_FILE) dirs.remove(`${IN_TARGET_STAGING}/${n}`);
    if (!names.includes(PAUSE_FILE)) dirs.rmdir(IN_TARGET_STAGING);
  } finally {
    dirs.close();
  }
}

const isNoSpace = (err: unknown) => {
  const e = err as NodeJS.ErrnoException | undefined;
  return e?.code === 'ENOSPC' || e?.code === 'EDQUOT' || /\bENOSPC\b|no space left on device/i.test(e?.message ?? '');
};

function mib(n: number): string {
  return n >= 1024 * 1024 * 1024 ? `${(n / 1024 ** 3).toFixed(2)} GiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function freeBytes(dir: string): number | undefined {
  try {
    const s = statfsSync(dir);
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return undefined;
  }
}

function diskFull(where: string, need: number, cause?: unknown): KkError {
  const free = freeBytes(where);
  return new KkError('DISK_FULL', `not enough space to stage the version: it needs ${mib(need)} in ${where}${free === undefined ? '' : `, ${mib(free)} free`}`, {
    hint: 'free space on that file system (or point --state-dir elsewhere), then pull again; the directory was not changed',
    details: { where, bytesNeeded: need, ...(free === undefined ? {} : { bytesFree: free }) },
    ...(cause ? { cause } : {}),
  });
}

function protection(local: string[], version: string[], ignoredPaths: string[]): Protection {
  const rules: Protection['rules'] = [
    ...local.map((pattern) => ({ pattern, from: 'local' as const })),
    ...version.filter((p) => !local.includes(p)).map((pattern) => ({ pattern, from: 'version' as const })),
  ];
  const one = rules.map((r) => ({ ...r, ig: makeIgnore([r.pattern]) }));
  const paths: Protection['paths'] = [];
  for (const p of ignoredPaths.slice(0, 100)) {
    const r = one.find((x) => x.ig.ignores(p)) ?? one.find((x) => x.ig.ignores(p.replace(/\/$/, '')));
    paths.push({ path: p, rule: r?.pattern ?? '', from: r?.from ?? 'local' });
  }
  return { rules, paths, total: ignoredPaths.length };
}

export async function pull(opts: PullOptions): Promise<PullResult> {
  const t0 = performance.now();
  assertProjectName(opts.project);
  assertAppName(opts.app);
  if (opts.version !== undefined) assertVersionSpec(opts.version);
  const { given, real: target, exists: existed } = await resolveTarget(opts.target);
  const state = new TargetState(target, opts.stateDir);
  const dryRun = !!opts.dryRun;
  const mode = opts.mode ?? 'full';
  if (!PULL_MODES.includes(mode)) throw new TypeError(`pull mode must be one of ${PULL_MODES.join(', ')}`);
  const maxDepth = opts.maxDepth ?? DEFAULT_PULL_MAX_DEPTH;
  if (mode === 'events') {
    if (!opts.paths?.length) throw new KkError('CONFIG_INVALID', 'an event-driven pull needs the changed paths', { hint: 'pass --changed PATH (repeatable) or --changed-from FILE' });
    for (const p of opts.paths) assertSafePath(p);
  }
  if (!dryRun) await assertNotPaused(target);
  const release = dryRun ? async () => {} : await state.lock(opts.command ?? 'pull');
  let done = false;
  try {
    // ---- finish or drop what an earlier run left ----
    let recovered = false;
    let repaired = false;
    if (!dryRun) {
      if (opts.repair && (await readJournal(state.journalFile))) {
        await unlink(state.journalFile);
        await state.clearStat();
        repaired = true;
      } else {
        recovered = await recover(state);
      }
      await removeStaging(state);
    }

    // ---- what to apply ----
    let manifest: Manifest;
    let digest: Digest;
    let opened: Store | undefined;
    const getStore = async () => {
      if (opened) return opened;
      const store = await openStore(opts.store);
      if (opts.manifest) {
        // Packed chunks are found through the chunk map the version's ref names: a store opened
        // for a rollback has read no ref yet. A ref that is gone: loose chunks only.
        // (getRef makes the Store consult that chunk map; every chunk is still checked by its digest.)
        await store.getRef(opts.project, opts.app, opts.manifest.manifest.version).catch(() => undefined);
      }
      return (opened = store);
    };
    if (opts.manifest) {
      ({ manifest, digest } = opts.manifest);
    } else {
      const store = await getStore();
      const info = await store.resolveVersion(opts.project, opts.app, opts.version ?? 'latest');
      digest = info.manifest;
      manifest = (await state.loadManifest(digest)) ?? (await store.getManifest(digest));
      if (manifest.version !== info.version) {
        throw new KkError('MANIFEST_INVALID', `manifest ${digest} is of version ${JSON.stringify(manifest.version)}, but the store's ref ${info.project}/${info.app}/${info.version} names it`, {
          hint: 'the store is damaged or not trustworthy; nothing was changed',
          details: { digest, ref: info.version, manifestVersion: manifest.version },
        });
      }
    }
    if (manifest.project !== opts.project || manifest.app !== opts.app) {
      throw new KkError('MANIFEST_INVALID', `manifest ${digest} is ${manifest.project}/${manifest.app}, not ${opts.project}/${opts.app}`);
    }

    // ---- refusals: another directory behind the same link, another app, an empty version ----
    if (given !== target && !opts.force) {
      const link = await state.readLink(given);
      if (link && link.real !== target && (await new TargetState(link.real, opts.stateDir).read())) {
        throw new KkError('TARGET_CONFLICT', `${given} now leads to ${target}, but kk manages it as ${link.real}`, {
          hint: `point the link back at ${link.real}, or pass --force to deploy to ${target}`,
          details: { path: given, real: target, managed: link.real },
        });
      }
    }
    const prior = await state.read();
    const current = prior?.history[0];
    if (current && (current.project !== opts.project || current.app !== opts.app) && !opts.force) {
      throw new KkError('TARGET_CONFLICT', `${target} holds ${current.project}/${current.app} ${current.version}, not ${opts.project}/${opts.app}`, {
        hint: 'pull into the directory of this app, or pass --force to replace the other app there',
        details: { target, holds: { project: current.project, app: current.app, version: current.version } },
      });
    }

    // ---- plan ----
    const exists = existed || (await stat(target).then((s) => s.isDirectory(), () => false));
    if (!exists && !dryRun) await mkdir(target, { recursive: true });
    const versionRules = manifest.ignore ?? [];
    const localRules = opts.ignore ?? [];
    const ig = makeIgnore([...localRules, ...versionRules]);
    const warnings: string[] = [];
    const reserved = new Set([IN_TARGET_STAGING]);
    const noTree: TargetTree = { entries: new Map(), ignored: 0, ignoredPaths: [], tooDeep: [], unreadable: [] };
    const tree = !exists && dryRun ? noTree : mode === 'events' ? eventTree(target, ig, opts.paths!, maxDepth) : walkTarget(target, ig, reserved, { maxDepth, tolerateUnreadable: true });
    // What the plan covers: the listed paths only (events), and nothing below the depth limit.
    const selected = selectManifest(manifest, mode === 'events' ? opts.paths! : undefined, maxDepth);
    if (selected.tooDeep) warnings.push(`${selected.tooDeep} path(s) of the version lie deeper than ${maxDepth} directories and were not applied (first: ${selected.firstTooDeep}); raise --max-depth to apply them`);
    if (tree.tooDeep.length) warnings.push(`${tree.tooDeep.length} director${tree.tooDeep.length === 1 ? 'y' : 'ies'} at depth ${maxDepth} were not scanned and are left as they are (first: ${tree.tooDeep[0]})`);
    if (mode === 'full' && !prior && !repaired && tree.entries.size > 0 && !opts.adopt) {
      throw new KkError('TARGET_NOT_MANAGED', `${target} is not empty and kk has never deployed to it`, {
        hint: 'pull into an empty directory, or pass --adopt to take it over (files the version lacks will be deleted)',
        details: { target, entries: tree.entries.size },
      });
    }
    const holdsFiles = [...tree.entries.values()].some((e) => e.kind !== 'dir');
    if (mode === 'full' && manifest.files.length === 0 && holdsFiles && !opts.force) {
      throw new KkError('TARGET_CONFLICT', `${manifest.project}/${manifest.app} ${manifest.version} is empty: applying it would empty ${target}`, {
        hint: 'check the version (kk manifest); pass --force if the directory should really be emptied',
        details: { target, version: manifest.version },
      });
    }
    const placed = await state.readStat();
    const detectLocalChanges = opts.onLocalChange === 'fail';
    const before = detectLocalChanges && current ? await state.loadManifest(current.manifest).catch(() => undefined) : undefined;
    const plan = await computePlan({
      manifest: selected.manifest,
      tree,
      root: target,
      ig,
      placed,
      verify: !!opts.verify,
      hasher: opts.hasher,
      mode: mode === 'skip-existing' ? 'skip-existing' : 'full',
      detectLocalChanges,
      ...(before ? { previous: before } : {}),
    });
    if (tree.unreadable.length) {
      // The scan did not complete: nothing is removed as an orphan (seed 004), and nothing may land where kk could not look.
      warnings.push(`${tree.unreadable.length} director${tree.unreadable.length === 1 ? 'y' : 'ies'} could not be read (first: ${tree.unreadable[0]}): the scan is incomplete, so nothing the version lacks was deleted`);
      const wanted = new Set(selected.manifest.files.map((f) => f.path));
      plan.deleteFiles = plan.deleteFiles.filter((p) => wanted.has(p));
      plan.deleteDirs = [];
      const blocked = plan.write.find((w) => tree.entries.get(w.file.path)?.kind === 'dir' || tree.unreadable.some((u) => w.file.path.startsWith(`${u}/`)));
      if (blocked) {
        throw new KkError('TARGET_CONFLICT', `${join(target, blocked.file.path)} cannot be written: kk could not read ${tree.unreadable[0]} in ${target}`, {
          hint: 'give the user running kk read access to that directory (or ignore it), then pull again; nothing was changed',
          details: { target, unreadable: tree.unreadable.slice(0, 20) },
        });
      }
    }
    if (detectLocalChanges && plan.localChanges.length && !dryRun) {
      const n = plan.localChanges.length;
      const list = plan.localChanges.slice(0, 5).map((c) => `${c.path} (${c.change === 'added' ? 'not written by kk' : 'modified'})`).join(', ');
      throw new KkError('TARGET_CONFLICT', `${n} file${n === 1 ? '' : 's'} in ${target} changed locally since kk wrote ${n === 1 ? 'it' : 'them'} and would be ${mode === 'full' ? 'overwritten or deleted' : 'overwritten'}: ${list}${n > 5 ? `, and ${n - 5} more` : ''}`, {
        hint: 'keep what you need from them (kk diff --path shows the plan), then pull again with --on-local-change overwrite; nothing was changed',
        details: { target, localChanges: plan.localChanges.slice(0, 1000) },
      });
    }
    const rootMode = exists ? (await stat(target)).mode & 0o7777 : 0o755;
    if ((rootMode & 0o700) !== 0o700) plan.chmodDirs.push({ path: '', mode: rootMode });
    if (opts.maxDelete !== undefined && plan.deleteFiles.length > opts.maxDelete) {
      throw new KkError('MAX_DELETE', `applying ${manifest.version} would delete ${plan.deleteFiles.length} files in ${target}, more than the limit of ${opts.maxDelete}`, {
        hint: 'check the target and version (kk diff), then raise --max-delete if this is intended',
      });
    }
    const result: PullResult = {
      project: opts.project,
      app: opts.app,
      version: manifest.version,
      manifest: digest,
      target,
      dryRun,
      upToDate: planIsEmpty(plan),
      plan: summarizePlan(plan),
      chunksFetched: 0,
      chunksFromDeltas: 0,
      bytesFetched: 0,
      bytesFetchedRaw: 0,
      chunksSeeded: 0,
      bytesSeeded: 0,
      bytesHashed: plan.bytesHashed,
      paths: { added: [], changed: [], deleted: [], metaOnly: [] },
      protected: protection(localRules, versionRules, tree.ignoredPaths),
      recovered,
      durationMs: 0,
      syncMode: mode,
      localChanges: plan.localChanges,
      warnings,
    };
    const previous = prior?.history[0];
    if (previous) result.previous = previous.version;
    result.paths = {
      added: plan.write.filter((w) => w.reason === 'add').map((w) => w.file.path),
      changed: plan.write.filter((w) => w.reason !== 'add').map((w) => w.file.path),
      deleted: plan.deleteFiles,
      metaOnly: plan.meta.map((f) => f.path),
    };
    if (dryRun) {
      result.durationMs = Math.round(performance.now() - t0);
      done = true;
      return result;
    }
    const applied: AppliedVersion = { project: opts.project, app: opts.app, version: manifest.version, manifest: digest, appliedAt: new Date().toISOString() };
    if (opts.ignore?.length) applied.ignore = opts.ignore;
    if (mode !== 'full') applied.mode = mode;
    const finish = async () => {
      if (given !== target) await state.writeLink(given);
      if (opened) await opened.recordPull({ project: opts.project, app: opts.app, version: manifest.version, manifest: digest, agent: opts.agent ?? '', upToDate: result.upToDate });
      result.durationMs = Math.round(performance.now() - t0);
      done = true;
      return result;
    };
    if (result.upToDate && previous?.manifest === digest && !recovered && !repaired && plan.bytesHashed === 0) {
      // Nothing to write and nothing new to record: leave the directory and the state alone.
      return await finish();
    }

    // ---- stage ----
    await mkdir(state.dir, { recursive: true });
    const sameDevice = (await stat(state.dir)).dev === (await stat(target)).dev;
    const stagingReal = sameDevice ? state.stagingDir : join(target, IN_TARGET_STAGING);
    const need = plan.bytesToWrite + plan.write.length * 4096;
    const free = freeBytes(sameDevice ? state.dir : target);
    if (free !== undefined && need > free) throw diskFull(stagingReal, need);
    // In the target, staging is reached through a no-follow handle, never by its name.
    const stagingDirs = sameDevice ? undefined : new TargetDirs(target);
    let history: Manifest[] = [];
    try {
      let stagingDir = stagingReal;
      if (stagingDirs) {
        stagingDirs.dir(IN_TARGET_STAGING, true);
        stagingDir = stagingDirs.handle(IN_TARGET_STAGING);
      } else {
        await mkdir(stagingDir, { recursive: true, mode: 0o700 });
      }
      history = await loadHistoryManifests(state, prior?.history ?? []);
      const cached = sameDevice ? new Set(await readdir(state.cacheDir).catch(() => [] as string[])) : new Set<string>();
      const seeds = buildSeedIndex(target, plan, manifest, history, sameDevice ? { dir: state.cacheDir, names: cached } : undefined, tree);
      await stageFiles(plan, stagingDir, seeds, { ...opts, store: getStore }, result, manifest.deltas ?? {}, sameDevice ? state.dir : target);
      await state.saveManifest(manifest);
      if (sameDevice) await mkdir(state.cacheDir, { recursive: true });
    } catch (err) {
      stagingDirs?.close();
      await removeStaging(state).catch(() => {});
      if (isNoSpace(err)) throw diskFull(stagingReal, need, err);
      throw err;
    }
    stagingDirs?.close();

    // ---- commit ----
    const journal: Journal = {
      format: 'kk-journal/2',
      target,
      applied,
      stagingDir: stagingReal,
      unlink: plan.deleteFiles,
      rmdir: plan.deleteDirs,
      mkdir: plan.makeDirs,
      rename: plan.write.map((w, i) => [String(i), w.file.path]),
      meta: plan.meta.map((f) => ({ path: f.path, mode: f.mode, mtime: f.mtime })),
      chmodDirs: plan.chmodDirs,
    };
    try {
      // Paused while this pull staged: stop before anything changes.
      await assertNotPaused(target);
    } catch (err) {
      await removeStaging(state).catch(() => {});
      throw err;
    }
    opts.onProgress?.({ phase: 'commit', done: 0, total: journal.rename.length, bytesDone: 0, bytesTotal: 0 });
    try {
      await writeJournal(state.journalFile, journal);
    } catch (err) {
      await removeStaging(state).catch(() => {});
      if (isNoSpace(err)) throw diskFull(state.dir, 4096, err);
      throw err;
    }
    const touched = runJournal(target, journal, {
      // Keep replaced files (hard links, free) so rollback needs no network.
      beforeReplace: sameDevice
        ? (p, at) => {
            const sha = plan.known.get(p);
            const src = sha ? at() : undefined;
            if (sha && src) keepFile(src, join(state.cacheDir, digestHex(sha!)));
          }
        : undefined,
    });
    if (opts.fsync ?? true) await makeDurable(target, touched);
    await state.writeStat(placedStats(target, selected.manifest, plan, tree, placed, mode !== 'full' || selected.partial));
    await state.recordApplied(applied);
    await unlink(state.journalFile);
    await removeStaging(state);
    if (sameDevice) await pruneFileCache(state, opts);
    return await finish();
  } finally {
    if (!done && !dryRun && !(await state.read().catch(() => undefined)) && !existsSync(state.journalFile)) {
      // A failed first pull leaves no state behind (only the lock, released below).
      await rm(state.dir, { recursive: true, force: true }).catch(() => {});
    }
    await release();
  }
}

/** Manifests of the versions applied before (newest first, up to 3), from local state. */
async function loadHistoryManifests(state: TargetState, history: AppliedVersion[]): Promise<Manifest[]> {
  const out: Manifest[] = [];
  const seen = new Set<string>();
  for (const h of history) {
    if (out.length >= 3) break;
    if (seen.has(h.manifest)) continue;
    seen.add(h.manifest);
    const m = await state.loadManifest(h.manifest).catch(() => undefined);
    if (m) out.push(m);
  }
  return out;
}

/**
 * Where each chunk can be copied from locally: files in the target whose content is known (or
 * believed, from the last applied manifest), then files kept from earlier versions. Every copy
 * is verified, so a wrong belief costs a read, never a wrong byte.
 */
function buildSeedIndex(
  target: string,
  plan: ApplyPlan,
  manifest: Manifest,
  history: Manifest[],
  cache: { dir: string; names: Set<string> } | undefined,
  tree: ReturnType<typeof walkTarget>,
): Map<Digest, Seed[]> {
  const index = new Map<Digest, Seed[]>();
  // Only chunks this plan writes (and delta bases for them) are looked up: indexing every chunk of
  // every version cost more than the update itself on a large tree with few changes.
  const needed = new Map<Digest, number>();
  const deltas = manifest.deltas ?? {};
  for (const w of plan.write) {
    for (const [d, size] of fileChunks(w.file)) {
      needed.set(d, size);
      const base = deltas[d];
      if (base && !needed.has(base)) needed.set(base, -1);
    }
  }
  if (!needed.size) return index;
  const add = (abs: string, chunks: [Digest, number][], trusted = false) => {
    let offset = 0;
    for (const [d, size] of chunks) {
      if (!needed.has(d)) {
        offset += size;
        continue;
      }
      const list = index.get(d);
      const seed: Seed = trusted ? { abs, offset, size, trusted } : { abs, offset, size };
      if (!list) index.set(d, [seed]);
      else if (trusted && !list[0]!.trusted) list.unshift(seed);
      else if (list.length < 3) list.push(seed);
      offset += size;
    }
  };
  // A single-chunk file is its own chunk: only multi-chunk files need their chunk lists looked up.
  const multiBySha = new Map<Digest, FileEntry>();
  for (const m of [manifest, ...history]) for (const f of m.files) if (f.chunks && !multiBySha.has(f.sha256)) multiBySha.set(f.sha256, f);
  const chunksOf = (sha: Digest, size: number): [Digest, number][] | undefined => {
    const multi = multiBySha.get(sha);
    if (multi) return fileChunks(multi);
    return needed.has(sha) && size > 0 ? [[sha, size]] : undefined;
  };
  for (const [path, sha] of plan.known) {
    const e = tree.entries.get(path);
    const chunks = e?.kind === 'file' ? chunksOf(sha, e.size) : undefined;
    if (chunks) add(join(target, path), chunks, plan.trusted.has(path));
  }
  const current = history[0];
  if (current) {
    for (const f of current.files) {
      if (!f.chunks && !needed.has(f.sha256)) continue;
      const e = tree.entries.get(f.path);
      if (e?.kind === 'file' && e.size === f.size && !plan.known.has(f.path)) add(join(target, f.path), fileChunks(f));
    }
  }
  if (cache) {
    for (const name of cache.names) {
      const sha = `sha256:${name}` as Digest;
      const multi = multiBySha.get(sha);
      const size = needed.get(sha);
      if (multi) add(join(cache.dir, name), fileChunks(multi));
      else if (size !== undefined && size > 0) add(join(cache.dir, name), [[sha, size]]);
    }
  }
  return index;
}

async function stageFiles(
  plan: ApplyPlan,
  stagingDir: string,
  seeds: Map<Digest, Seed[]>,
  opts: PullOptions,
  result: PullResult,
  deltas: Record<string, Digest>,
  fsRoot: string,
): Promise<void> {
  const { hasher } = opts;
  const concurrency = opts.concurrency ?? 8;
  const progress = phaseReporter(opts.onProgress, 'fetch', plan.write.length, plan.bytesToWrite);
  let storePromise: Promise<Store> | undefined;
  // bytesFetched counts what the Store read for chunks (Store.chunkBytesRead: a frame once, as
  // stored), not the objects it returns (a chunk of a frame comes back raw), plus the deltas.
  let counted: { store: Store; before: number } | undefined;
  const store = () =>
    (storePromise ??= openStore(opts.store).then((s) => {
      counted = { store: s, before: s.chunkBytesRead };
      return s;
    }));
  const fetchObject = async (d: Digest, size: number): Promise<Buffer> => {
    const object = await (await store()).getChunkObject(d);
    result.chunksFetched++;
    result.bytesFetchedRaw += size;
    return object;
  };
  const corrupt = (reason: string, d: Digest) =>
    new KkError('CHUNK_CORRUPT', reason, {
      hint: 'the store holds damaged data: run `kk fsck --store <store> --repair` to quarantine it, then push the version again from its build to restore it',
      details: { digest: d },
    });
  const stagedPath = (i: number) => join(stagingDir, String(i));
  /** A delta for chunk `d` whose base is on this machine, if the store has one. */
  const localDelta = async (d: Digest) => {
    const base = deltas[d];
    const seed = base ? seeds.get(base)?.[0] : undefined;
    if (!base || !seed) return undefined;
    const object = await (await store()).getDelta(d, base).catch(() => undefined);
    if (!object) return undefined;
    result.bytesFetched += object.length;
    return { object, src: seed.abs, offset: seed.offset, size: seed.size, digest: base };
  };

  const small: number[] = [];
  const large: number[] = [];
  plan.write.forEach((w, i) => (fileChunks(w.file).length <= 1 ? small : large).push(i));

  // ---- single-chunk files: whole files per worker task, seeded or from one stored object ----
  await forEachLimit(batches(small, (i) => plan.write[i]!.file.size, 8 * 1024 * 1024, 128), hasher.threads + 1, async (batch) => {
    const reqs: StageFileRequest[] = batch.map((i) => {
      const f = plan.write[i]!.file;
      const local = f.size ? (seeds.get(f.sha256) ?? []) : [];
      return { dst: stagedPath(i), size: f.size, mode: f.mode, mtime: mtimeArg(f.mtime), digest: f.sha256, seeds: local.map((x) => ({ src: x.abs, offset: x.offset })) };
    });
    const withObjects = async (list: StageFileRequest[]) => {
      if (!list.length) return;
      // One batch request: chunks packed near each other come with one range read.
      const sizes = new Map(list.map((r) => [r.digest as Digest, r.size]));
      const objects = await (await store()).getChunkObjects([...sizes.keys()], concurrency);
      for (const d of objects.keys()) {
        result.chunksFetched++;
        result.bytesFetchedRaw += sizes.get(d) ?? 0;
      }
      for (const r of list) {
        r.object = objects.get(r.digest as Digest)!;
        r.seeds = [];
        delete r.delta;
      }
    };
    const unseeded = reqs.filter((r) => r.size > 0 && r.seeds.length === 0);
    await forEachLimit(unseeded, concurrency, async (r) => {
      const delta = await localDelta(r.digest as Digest);
      if (delta) r.delta = delta;
    });
    await withObjects(unseeded.filter((r) => !r.delta));
    let pending = reqs;
    for (let round = 0; pending.length; round++) {
      const res = await hasher.stageFiles(pending);
      const retry: StageFileRequest[] = [];
      res.forEach((r, j) => {
        const req = pending[j]!;
        if (r.ok) {
          if (r.seeded || req.size === 0) {
            if (r.seeded) {
              result.chunksSeeded++;
              result.bytesSeeded += req.size;
            }
            // Copied locally, not fetched: it leaves the fetch total instead of adding to it.
            progress.skip(1, req.size);
            return;
          }
          if (r.fromDelta) {
            result.chunksFromDeltas++;
            result.bytesFetchedRaw += req.size;
          }
          progress.add(1, req.size);
        } else if (r.corrupt) {
          throw corrupt(`${r.reason} (read from the store)`, req.digest as Digest);
        } else {
          retry.push(req);
        }
      });
      // A second round only holds files whose fetched object failed: that cannot happen twice.
      if (round > 0 && retry.length) throw corrupt(`chunk ${retry[0]!.digest} could not be staged`, retry[0]!.digest as Digest);
      await withObjects(retry);
      pending = retry;
    }
  });

  // ---- multi-chunk files: created at full size, chunks land in any order ----
  const fromStore = new Map<Digest, { size: number; dests: { path: string; offset: number }[] }>();
  const seedTasks: { d: Digest; size: number; path: string; offset: number; fileSize: number }[] = [];
  await forEachLimit(large, 16, async (i) => {
    const f = plan.write[i]!.file;
    const path = stagedPath(i);
    const fh = await open(path, 'w', 0o600);
    await fh.truncate(f.size);
    await fh.close();
    let offset = 0;
    for (const [d, size] of fileChunks(f)) {
      if (seeds.has(d)) seedTasks.push({ d, size, path, offset, fileSize: f.size });
      else addStoreDest(fromStore, d, size, path, offset);
      offset += size;
    }
  });
  // Chunks from files the stat cache vouches for, contiguous in both files, are copied as one
  // range without a second hash (the staged file's own digest is checked below all the same).
  const ranges: { src: string; srcOffset: number; dst: string; offset: number; size: number; chunks: number; fileSize: number }[] = [];
  const verified: typeof seedTasks = [];
  for (const t of seedTasks) {
    const s0 = seeds.get(t.d)![0]!;
    if (!s0.trusted) {
      verified.push(t);
      continue;
    }
    const last = ranges[ranges.length - 1];
    if (last && last.dst === t.path && last.src === s0.abs && last.offset + last.size === t.offset && last.srcOffset + last.size === s0.offset && last.size < RANGE_MAX) {
      last.size += t.size;
      last.chunks++;
    } else ranges.push({ src: s0.abs, srcOffset: s0.offset, dst: t.path, offset: t.offset, size: t.size, chunks: 1, fileSize: t.fileSize });
  }
  await forEachLimit(ranges, Math.max(2, hasher.threads), async (r) => {
    // A whole file from one file (moved, or kept in the cache): the kernel copies it (a reflink
    // where the file system shares blocks, copy_file_range otherwise), no bytes through here.
    const whole = r.offset === 0 && r.srcOffset === 0 && r.size === r.fileSize && (await stat(r.src).catch(() => undefined))?.size === r.size;
    if (whole) await copyFile(r.src, r.dst, fsConstants.COPYFILE_FICLONE);
    else await copyRange(r.src, r.srcOffset, r.dst, r.offset, r.size);
    result.chunksSeeded += r.chunks;
    result.bytesSeeded += r.size;
    progress.skip(0, r.size);
  });
  await forEachLimit(verified, Math.max(concurrency, hasher.threads * 2), async (t) => {
    for (const s of seeds.get(t.d)!) {
      const r = await hasher.copyChunk(s.abs, s.offset, t.size, t.d, t.path, t.offset);
      if (r.ok) {
        result.chunksSeeded++;
        result.bytesSeeded += t.size;
        progress.skip(0, t.size);
        return;
      }
    }
    addStoreDest(fromStore, t.d, t.size, t.path, t.offset);
  });
  await forEachLimit(fromStore, concurrency, async ([d, { size, dests }]) => {
    const delta = await localDelta(d);
    if (delta) {
      const done = await Promise.all(dests.map((dest) => hasher.applyDeltaChunk(delta, d, size, dest.path, dest.offset)));
      if (done.every((r) => r.ok)) {
        result.chunksFromDeltas++;
        result.bytesFetchedRaw += size;
        progress.add(0, size * dests.length);
        return;
      }
    }
    const object = await fetchObject(d, size);
    for (const dest of dests) {
      const r = await hasher.writeChunk(object, d, size, dest.path, dest.offset);
      if (!r.ok) throw corrupt(`${r.reason} (read from the store)`, d);
      progress.add(0, size);
    }
  });
  // Every chunk was verified; the whole file is too, against its own digest (issue 10 item 20).
  // Meanwhile the disk takes the assembled bytes: each large file's fdatasync runs while the
  // hash reads it back from the page cache, so the syncfs below finds little left to write
  // (for a 1 GiB file, seconds of writeback no longer wait for the hash, nor the hash for them).
  const writeback = (opts.fsync ?? true) ? large.map((i) => datasync(stagedPath(i))) : [];
  await forEachLimit(batches(large, (i) => plan.write[i]!.file.size, 256 * 1024 * 1024, 64), hasher.threads, async (part) => {
    const sums = await hasher.sha256Files(part.map(stagedPath));
    sums.forEach((r, j) => {
      const f = plan.write[part[j]!]!.file;
      if (!('sha256' in r) || r.sha256 !== f.sha256 || r.size !== f.size) {
        throw new KkError('CHUNK_CORRUPT', `${f.path}: its chunks verify but the assembled file does not match its sha256 ${f.sha256}`, {
          hint: 'nothing was changed; if files in the directory changed while kk pulled (its local copies feed the new file), pull again; otherwise the manifest is wrong for this file: re-push the version from its build',
          details: { path: f.path, expected: f.sha256, actual: 'sha256' in r ? r.sha256 : r.reason },
        });
      }
    });
    await hasher.finishFiles(part.map((i) => ({ dst: stagedPath(i), mode: plan.write[i]!.file.mode, mtime: mtimeArg(plan.write[i]!.file.mtime) })));
    progress.add(part.length, 0);
  });

  await Promise.all(writeback);
  if (counted) result.bytesFetched += counted.store.chunkBytesRead - counted.before;
  // Durable before anything is renamed into place: one syncfs rather than an fsync per file.
  if ((opts.fsync ?? true) && plan.write.length) await makeDurable(fsRoot, plan.write.map((_, i) => stagedPath(i)));
  progress.end();
}

/** fdatasync of one file, started early. */
async function datasync(path: string): Promise<void> {
  const fh = await open(path, 'r').catch(() => undefined);
  if (!fh) return;
  // A failure is not reported here: makeDurable syncs the file (or fails) all the same.
  await fh.datasync().catch(() => {});
  await fh.close().catch(() => {});
}

const RANGE_MAX = 64 * 1024 * 1024;
const COPY_BUFFER = 1024 * 1024;

/** Copy `size` bytes between two files at the given offsets (a merged run of seeded chunks). */
async function copyRange(src: string, srcOffset: number, dst: string, offset: number, size: number): Promise<void> {
  const from = await open(src, 'r');
  try {
    const to = await open(dst, 'r+');
    try {
      const buf = Buffer.allocUnsafe(Math.min(COPY_BUFFER, size));
      for (let done = 0; done < size; ) {
        const { bytesRead } = await from.read(buf, 0, Math.min(buf.length, size - done), srcOffset + done);
        if (bytesRead === 0) throw new KkError('TARGET_CONFLICT', `${src} became shorter while kk copied from it`, { hint: 'pull again' });
        let written = 0;
        while (written < bytesRead) written += (await to.write(buf, written, bytesRead - written, offset + done + written)).bytesWritten;
        done += bytesRead;
      }
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}

function addStoreDest(m: Map<Digest, { size: number; dests: { path: string; offset: number }[] }>, d: Digest, size: number, path: string, offset: number) {
  const e = m.get(d);
  if (e) e.dests.push({ path, offset });
  else m.set(d, { size, dests: [{ path, offset }] });
}

/**
 * The part of the version a pull applies: with `paths`, only entries at or below them (and the
 * directories leading there); never anything nested deeper than `maxDepth` directories.
 */
function selectManifest(manifest: Manifest, paths: string[] | undefined, maxDepth: number): { manifest: Manifest; partial: boolean; tooDeep: number; firstTooDeep?: string } {
  let tooDeep = 0;
  let firstTooDeep: string | undefined;
  const inDepth = (p: string) => {
    if (p.split('/').length <= maxDepth) return true;
    tooDeep++;
    firstTooDeep ??= p;
    return false;
  };
  let under: (p: string) => boolean = () => true;
  let parents = new Set<string>();
  if (paths) {
    const set = new Set(paths);
    under = (p) => set.has(p) || parentsOf(p).some((q) => set.has(q));
    parents = new Set(paths.flatMap((p) => parentsOf(p)));
  }
  const files = manifest.files.filter((f) => under(f.path) && inDepth(f.path));
  const dirs = manifest.dirs.filter((d) => (under(d.path) || parents.has(d.path)) && inDepth(d.path));
  if (files.length === manifest.files.length && dirs.length === manifest.dirs.length) return { manifest, partial: false, tooDeep: 0 };
  return { manifest: { ...manifest, files, dirs }, partial: true, tooDeep, ...(firstTooDeep ? { firstTooDeep } : {}) };
}

/**
 * What an event-driven pull looks at: each listed path (a directory with everything below it)
 * and the directories leading to it, lstat-ed one segment at a time (never through a symlink).
 * Parent directories are marked as holding content the plan does not cover, so none is removed.
 */
function eventTree(root: string, ig: ReturnType<typeof makeIgnore>, paths: string[], maxDepth: number): TargetTree {
  const entries = new Map<string, TargetEntry>();
  const tree: TargetTree = { entries, ignored: 0, ignoredPaths: [], tooDeep: [], unreadable: [] };
  const reserved = new Set([IN_TARGET_STAGING]);
  const look = (rel: string): TargetEntry | undefined => {
    const known = entries.get(rel);
    if (known) return known;
    const st = lstatSync(join(root, rel), { throwIfNoEntry: false });
    if (!st) return undefined;
    const e: TargetEntry = st.isDirectory()
      ? { kind: 'dir', mode: st.mode & 0o1777, keepsIgnored: true }
      : st.isFile()
        ? { kind: 'file', size: st.size, mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs), ctimeMs: st.ctimeMs, ino: st.ino }
        : { kind: 'other' };
    entries.set(rel, e);
    return e;
  };
  for (const p of paths) {
    if (reserved.has(p.split('/')[0]!)) continue;
    if (isIgnored(ig, p, false) || isIgnored(ig, p, true)) {
      tree.ignored++;
      tree.ignoredPaths.push(p);
      continue;
    }
    let reachable = true;
    for (const q of parentsOf(p)) {
      const e = look(q);
      if (e?.kind !== 'dir') {
        // A file or link on the way: nothing below it exists (a link is never followed).
        reachable = false;
        break;
      }
    }
    if (!reachable) continue;
    const depth = p.split('/').length;
    const e = look(p);
    if (e?.kind === 'dir') {
      e.keepsIgnored = false;
      const sub = walkTarget(root, ig, reserved, { maxDepth, from: p, into: entries, tolerateUnreadable: true });
      if (sub.keepsIgnoredRoot) e.keepsIgnored = true;
      tree.tooDeep.push(...sub.tooDeep);
      tree.unreadable.push(...sub.unreadable);
      tree.ignored += sub.ignored;
      tree.ignoredPaths.push(...sub.ignoredPaths);
    } else if (depth > maxDepth) entries.delete(p);
  }
  return tree;
}

/** Stat cache after the commit: what each manifest path now holds. */
function placedStats(
  target: string,
  manifest: Manifest,
  plan: ApplyPlan,
  tree: ReturnType<typeof walkTarget>,
  before: Map<string, PlacedFile>,
  /** The plan covered part of the directory: entries of other paths stay (each is checked against a stat when used). */
  keepOthers = false,
): Map<string, PlacedFile> {
  const out = new Map<string, PlacedFile>(keepOthers ? before : []);
  if (keepOthers) for (const p of plan.deleteFiles) out.delete(p);
  const rewritten = new Set([...plan.write.map((w) => w.file.path), ...plan.meta.map((f) => f.path)]);
  for (const f of manifest.files) {
    const e = tree.entries.get(f.path);
    if (!rewritten.has(f.path) && e?.kind === 'file' && plan.known.get(f.path) === f.sha256) {
      out.set(f.path, { size: e.size, mtimeMs: e.mtimeMs, ctimeMs: e.ctimeMs, ino: e.ino, sha256: f.sha256 });
      continue;
    }
    if (!rewritten.has(f.path) && (keepOthers || !before.has(f.path))) continue;
    let st: Stats | undefined;
    try {
      st = lstatSync(join(target, f.path));
    } catch {
      continue;
    }
    if (st.isFile()) out.set(f.path, { size: st.size, mtimeMs: Math.floor(st.mtimeMs), ctimeMs: st.ctimeMs, ino: st.ino, sha256: f.sha256 });
  }
  return out;
}

/**
 * The cache of replaced files has a budget (issue 10 item 7): files of the `cacheVersions`
 * versions before the current one, and within `cacheMaxBytes` of space held by the cache alone
 * (hard links still in the directory cost nothing), the oldest dropped first.
 */
async function pruneFileCache(state: TargetState, opts: Pick<PullOptions, 'cacheVersions' | 'cacheMaxBytes'>): Promise<void> {
  const s = await state.read();
  const current = s?.history[0];
  const keepVersions = Math.max(0, opts.cacheVersions ?? 1);
  const keepManifests = new Set<string>();
  for (const h of s?.history ?? []) {
    if (keepManifests.size >= keepVersions) break;
    if (h.manifest !== current?.manifest) keepManifests.add(h.manifest);
  }
  const keep = new Set<string>();
  for (const d of keepManifests) {
    const m = await state.loadManifest(d as Digest).catch(() => undefined);
    for (const f of m?.files ?? []) keep.add(digestHex(f.sha256));
  }
  const names = await readdir(state.cacheDir).catch(() => [] as string[]);
  const kept: { name: string; size: number; ctimeMs: number }[] = [];
  await forEachLimit(names, 16, async (n) => {
    const abs = join(state.cacheDir, n);
    if (!keep.has(n)) {
      await unlink(abs).catch(() => {});
      return;
    }
    const st = await lstat(abs).catch(() => undefined);
    if (st && st.nlink <= 1) kept.push({ name: n, size: st.size, ctimeMs: st.ctimeMs });
  });
  if (opts.cacheMaxBytes === undefined) return;
  let total = kept.reduce((a, k) => a + k.size, 0);
  kept.sort((a, b) => a.ctimeMs - b.ctimeMs);
  for (const k of kept) {
    if (total <= opts.cacheMaxBytes) break;
    await unlink(join(state.cacheDir, k.name)).catch(() => {});
    total -= k.size;
  }
}

export interface RollbackOptions extends Omit<PullOptions, 'version' | 'manifest' | 'project' | 'app'> {
  /** Version to return to; default the one applied before the current. */
  to?: string;
  /** When given, the directory must hold this project's app (the shape of push and pull). */
  project?: string;
  app?: string;
}

/**
 * Apply the previously applied version again, from local state (manifest copy, file cache,
 * seeding) so the common case needs no network.
 */
export async function rollback(opts: RollbackOptions): Promise<PullResult> {
  if (opts.project !== undefined) assertProjectName(opts.project);
  if (opts.app !== undefined) assertAppName(opts.app);
  const state = new TargetState((await resolveTarget(opts.target)).real, opts.stateDir);
  const s = await state.read();
  const current = s?.history[0];
  if (!s || !current) {
    throw new KkError('NOTHING_TO_ROLLBACK', `kk has not deployed anything to ${state.target}`, { hint: 'pull a version first' });
  }
  if ((opts.project !== undefined && opts.project !== current.project) || (opts.app !== undefined && opts.app !== current.app)) {
    throw new KkError('TARGET_CONFLICT', `${state.target} holds ${current.project}/${current.app}, not ${opts.project ?? current.project}/${opts.app ?? current.app}`, {
      hint: 'check --path: rollback puts back an earlier version of the app that directory holds',
      details: { target: state.target, holds: { project: current.project, app: current.app } },
    });
  }
  const entry = opts.to
    ? s.history.find((h) => h.version === opts.to)
    : s.history.find((h) => h.manifest !== current.manifest);
  if (!entry) {
    throw new KkError('NOTHING_TO_ROLLBACK', opts.to ? `${opts.to} was never deployed to ${state.target}` : `${state.target} has no earlier version than ${current.version}`, {
      hint: opts.to ? 'pull it instead: kk pull --version ' + opts.to : 'nothing to go back to',
    });
  }
  let manifest = await state.loadManifest(entry.manifest);
  if (!manifest) manifest = await (await openStore(opts.store)).getManifest(entry.manifest);
  // The ignore rules the directory was last applied with keep protecting the same paths.
  const ignore = opts.ignore ?? current.ignore;
  const { to: _to, project: _p, app: _a, ...rest } = opts;
  return pull({
    ...rest,
    ...(ignore ? { ignore } : {}),
    project: entry.project,
    app: entry.app,
    manifest: { manifest, digest: entry.manifest },
    command: opts.command ?? 'rollback',
  });
}

/** What kk knows about a deploy directory: its history and the apply lock holder. */
export async function targetStatus(target: string, stateDir?: string) {
  const state = new TargetState((await resolveTarget(target)).real, stateDir);
  const s = await state.read();
  return {
    target: state.target,
    stateDir: state.dir,
    managed: !!s,
    current: s?.history[0],
    history: s?.history ?? [],
    lock: await state.lockHolder(),
    interrupted: !!(await readJournal(state.journalFile)),
    /** The cache of replaced files kept for offline rollback. */
    cache: await state.cacheUsage(),
    /** A local `kk pause --path` in force: every pull here is refused. */
    paused: await readLocalPause(state.target),
  };
}

/** The plan a pull would carry out at a target, without changing anything. */
export function diff(opts: Omit<PullOptions, 'dryRun'>): Promise<PullResult> {
  return pull({ ...opts, dryRun: true });
}
