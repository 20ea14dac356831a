// Running one task: core's pull, in-process, into the target directory. Strategy `mirror`
// applies the version exactly (deleting what it lacks); `overlay` never deletes: a dry run finds
// what mirror would delete and those paths are protected for the real run. Include/exclude are
// merged with the defaults (.git/, runtime/, tmp/) as ignore rules, so excluded paths are never
// touched. Every failure becomes an outcome with the error's code and a sentence saying why.
import { type FallbackEvent, type Hasher, KkError, type Store, Store as StoreClass, type VerifyProblem, isKkError, pull, verifyTarget, withRetry } from '@kk/core';
import { posix } from 'node:path';
import { openDriver, openDriverChain } from '@kk/drivers';
import type { ClaimedTask, LogLine, TaskOutcome } from './api.js';

/** Paths an agent never touches unless a target says otherwise (seed 000). */
export const DEFAULT_IGNORE = ['.git/', 'runtime/', 'tmp/'];

export interface ExecutionContext {
  stage(stage: string, progress?: number): void;
  log(line: string, level?: LogLine['level']): void;
}

/** Runs one claimed task to an outcome; never throws for a task failure. */
export interface TaskExecutor {
  run(claim: ClaimedTask, ctx: ExecutionContext): Promise<TaskOutcome>;
}

/** Escape a literal path for a gitignore pattern anchored at the root. */
export function literalPattern(p: string): string {
  return `/${p.replace(/[\\*?[\]]/g, (c) => `\\${c}`).replace(/ $/, '\\ ')}`;
}

/**
 * The ignore rules of a target: the defaults, then its excludes, then, when it lists includes,
 * "everything but directories" ignored and the includes re-included (the gitignore idiom).
 */
export function ignoreRules(t: Pick<ClaimedTask['target'], 'include' | 'exclude'>): string[] {
  const rules = [...DEFAULT_IGNORE, ...t.exclude];
  if (t.include.length) {
    const keep = t.include.flatMap((p) => [`!${p}`]);
    return ['*', '!*/', ...keep, ...rules];
  }
  return rules;
}

export interface PullExecutorOptions {
  /** The store to pull from: the server's URL (the default) or any store URL. */
  storeUrl: string;
  /** Token for the store when the claim brings none (or `claimToken` is false). */
  token?: string;
  /** Use the store token each claim brings (the store is the server). Default true. */
  claimToken?: boolean;
  hasher: Hasher;
  /** Where core keeps each target's state (applied versions, caches, journal). */
  stateDir: string;
  /** Parallel fetches inside one task (bounded concurrency within a job). Default 8. */
  concurrency?: number;
  /** Who pulls, for the store's audit log. */
  agent?: string;
  /** Open the store (tests pass one in). */
  openStore?: () => Promise<Store>;
  /** Directories target paths must lie in (kk agent --allow-root); none: any absolute path. */
  allowedRoots?: string[];
  /**
   * Stores tried in order when the store fails with a backend outage (seed 004: the server, then
   * the bucket behind it), opened with their own credentials; the fallback is logged in the task.
   */
  fallbackStores?: string[];
  /** At most this many store read requests a second (seed 004 `rate_limit`). */
  rateLimit?: number;
}

/** The allowed root a path lies in (itself or below), or undefined. */
export function allowedRoot(path: string, roots: readonly string[]): string | undefined {
  const p = posix.normalize(path);
  return roots.map((r) => posix.normalize(r).replace(/\/+$/, '') || '/').find((r) => r === '/' || p === r || p.startsWith(`${r}/`));
}

export class PullExecutor implements TaskExecutor {
  constructor(private readonly opts: PullExecutorOptions) {}

  /** Fallbacks of the store opened for the current task (seed 004: said in the result). */
  private fallbacks: FallbackEvent[] = [];

  private async store(claim: ClaimedTask, ctx: ExecutionContext): Promise<Store> {
    this.fallbacks = [];
    if (this.opts.openStore) return this.opts.openStore();
    const token = (this.opts.claimToken !== false ? claim.store_token : undefined) ?? this.opts.token;
    const fallbacks = this.opts.fallbackStores ?? [];
    let driver;
    if (fallbacks.length || this.opts.rateLimit) {
      const chain = await openDriverChain([{ url: this.opts.storeUrl, opts: token ? { token } : {} }, ...fallbacks.map((url) => ({ url }))], {
        ...(this.opts.rateLimit ? { rateLimit: this.opts.rateLimit } : {}),
        onFallback: (e) => ctx.log(`store ${e.from} failed (${e.reason}); using ${e.to}`, 'warn'),
      });
      driver = chain.driver;
      this.fallbacks = chain.events;
    } else driver = await openDriver(this.opts.storeUrl, token ? { token } : {});
    try {
      // A short outage of the server does not fail a task that is fetching.
      return await StoreClass.open(withRetry(driver, { retries: 6, baseMs: 500 }));
    } catch (err) {
      await driver.close().catch(() => {});
      throw err;
    }
  }

  async run(claim: ClaimedTask, ctx: ExecutionContext): Promise<TaskOutcome> {
    const { task, target } = claim;
    let store: Store | undefined;
    const roots = this.opts.allowedRoots ?? [];
    if (roots.length && !allowedRoot(target.path, roots)) {
      return { ok: false, code: 'PATH_NOT_ALLOWED', reason: `target path ${target.path} is outside the directories this node allows (${roots.join(', ')}); nothing was touched`, retryable: false };
    }
    try {
      ctx.stage('resolve', 0);
      store = await this.store(claim, ctx);
      const info = await store.resolveVersion(task.project, task.app, task.version);
      if (task.manifest && info.manifest !== task.manifest) {
        throw new KkError('MANIFEST_INVALID', `version ${task.version} of ${task.project}/${task.app} now names manifest ${info.manifest}, but the task was for ${task.manifest}`, {
          hint: 'the version was replaced in the store; sync the target again',
        });
      }
      const ignore = ignoreRules(target);
      if (task.source === 'verify') return await this.verify(claim, store, info.manifest, ignore, ctx);
      const base = {
        store,
        hasher: this.opts.hasher,
        project: task.project,
        app: task.app,
        version: task.version,
        target: target.path,
        stateDir: this.opts.stateDir,
        concurrency: this.opts.concurrency ?? 8,
        command: 'kk agent',
        ...(this.opts.agent ? { agent: this.opts.agent } : {}),
        // A file changed locally since kk wrote it fails the task instead of being overwritten.
        ...(target.on_local_change === 'fail' ? { onLocalChange: 'fail' as const } : {}),
        // skip-existing (seed 004): add what the directory lacks, never compare or delete what it has.
        ...(target.mode === 'skip-existing' ? { mode: 'skip-existing' as const } : {}),
      };
      if (target.strategy === 'overlay') {
        const plan = await pull({ ...base, ignore, dryRun: true, adopt: true });
        const keep = plan.paths.deleted.map((p) => literalPattern(p.replace(/\/$/, '')));
        if (keep.length) ctx.log(`overlay: keeping ${keep.length} path(s) the version does not have`);
        ignore.push(...keep);
      }
      ctx.log(`applying ${task.project}/${task.app} ${task.version} to ${target.path} (${target.strategy}${target.mode === 'skip-existing' ? ', skip-existing' : ''})`);
      let lastPhase = '';
      const r = await pull({
        ...base,
        ignore,
        adopt: target.strategy === 'overlay',
        onProgress: (e) => {
          if (e.phase !== lastPhase) {
            lastPhase = e.phase;
            ctx.log(`stage ${e.phase}`);
          }
          ctx.stage(e.phase, e.bytesTotal > 0 ? e.bytesDone / e.bytesTotal : e.total > 0 ? e.done / e.total : undefined);
        },
      });
      ctx.stage('done', 1);
      for (const w of r.warnings ?? []) ctx.log(w, 'warn');
      const result = {
        files_added: r.paths.added.length,
        files_changed: r.paths.changed.length + r.paths.metaOnly.length,
        files_deleted: r.paths.deleted.length,
        bytes_fetched: r.bytesFetched,
        seconds: Math.round(r.durationMs) / 1000,
        up_to_date: r.upToDate,
        manifest: r.manifest,
        ...(r.previous ? { previous: r.previous } : {}),
        ...(r.recovered ? { recovered: true } : {}),
        ...(r.warnings?.length ? { warnings: r.warnings } : {}),
        ...(this.fallbacks.length ? { store_fallbacks: this.fallbacks } : {}),
      };
      ctx.log(`done: ${result.files_added} added, ${result.files_changed} changed, ${result.files_deleted} deleted, ${result.bytes_fetched} bytes fetched in ${result.seconds} s`);
      return { ok: true, result };
    } catch (err) {
      return outcomeOf(err);
    } finally {
      if (store && !this.opts.openStore) await store.driver.close().catch(() => {});
    }
  }

  /**
   * Verify (DESIGN 13): rehash the directory against the version's manifest. Every file exact and
   * nothing extra (overlay: extra files are allowed; skip-existing: every file present) is OK; anything else is a CONFLICT naming the
   * first differences.
   */
  private async verify(claim: ClaimedTask, store: Store, digest: string, ignore: string[], ctx: ExecutionContext): Promise<TaskOutcome> {
    const { task, target } = claim;
    ctx.stage('verify', 0);
    ctx.log(`verifying ${target.path} against ${task.project}/${task.app} ${task.version}`);
    const manifest = await store.getManifest(digest as Parameters<Store['getManifest']>[0]);
    const r = await verifyTarget({ target: target.path, manifest, hasher: this.opts.hasher, ignore });
    // skip-existing (seed 004) never compares what the directory has: only what it lacks differs.
    const problems = r.problems.filter((p) =>
      target.mode === 'skip-existing' ? p.problem === 'missing' : target.strategy === 'mirror' || (p.problem !== 'extra' && p.problem !== 'not-a-dir'),
    );
    const result = { verified: problems.length === 0, files_checked: r.filesChecked, bytes_hashed: r.bytesHashed, problems: problems.slice(0, 50) };
    ctx.stage('done', 1);
    if (!problems.length) {
      ctx.log(`verify OK: ${r.filesChecked} files match ${task.version}`);
      return { ok: true, result };
    }
    // One entry per path: a file edited on the node differs in content and in its modified time.
    const byPath = new Map<string, VerifyProblem[]>();
    for (const p of problems) byPath.set(p.path, [...(byPath.get(p.path) ?? []), p]);
    const rank = ['missing', 'not-a-file', 'not-a-dir', 'content', 'mode', 'mtime', 'extra'];
    const lines = [...byPath].map(([path, ps]) => `${path} (${ps.sort((a, b) => rank.indexOf(a.problem) - rank.indexOf(b.problem)).map(describeProblem).join(', ')})`);
    for (const l of lines.slice(0, 50)) ctx.log(`differs: ${l}`, 'error');
    return { ok: false, code: 'CONFLICT', reason: `${lines.length} difference(s) between ${target.path} and ${task.version}: ${lines.slice(0, 10).join('; ')}${lines.length > 10 ? '; ...' : ''}`, retryable: false, result };
  }
}

function describeProblem(p: VerifyProblem): string {
  const what = { missing: 'missing', content: 'changed locally', mode: 'mode changed', mtime: 'modified time changed', extra: 'not in the version', 'not-a-file': 'not a file', 'not-a-dir': 'not a directory' }[p.problem];
  return p.problem === 'mode' ? `${what}: ${p.actual} instead of ${p.expected}` : what;
}

/** A failure as the server records it: a stable code and a sentence saying what to do. */
export function outcomeOf(err: unknown): TaskOutcome {
  if (isKkError(err)) {
    return { ok: false, code: err.code, reason: err.hint ? `${err.message} (${err.hint})` : err.message };
  }
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOSPC') return { ok: false, code: 'DISK_FULL', reason: `the node's disk is full: ${e.message}` };
  if (e?.code === 'EACCES' || e?.code === 'EPERM') return { ok: false, code: 'FORBIDDEN', reason: `the agent may not write there: ${e.message}` };
  return { ok: false, code: 'INTERNAL', reason: String(e?.message ?? err) };
}
