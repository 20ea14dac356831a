// ssh nodes (DESIGN 13, seed 000 "ssh + rsync"): nothing of kk runs on them; the server syncs
// them itself. A worker claims their tasks through the same claim / lease / fencing calls the
// agents use (so max_parallel_nodes, retries with backoff, logs and results work the same),
// materializes the version once with core's pull into `<state>/ssh-cache/<project>/<app>/<version>`
// (reused by every node and attempt), and runs `rsync -az --delete --delay-updates --safe-links
// --exclude-from=...` over `ssh -o BatchMode=yes` per node. rsync's exit status and stderr become
// a retryable or final failure naming the cause. The worker also probes idle ssh nodes (ONLINE on
// success, DEGRADED after one failure, OFFLINE after three) and answers the connectivity test
// (`ssh ... true`, then `rsync --list-only` of each target path). A verify task (seed 002) is an
// rsync dry run with checksums against the materialized version: any difference is a CONFLICT.
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { KkError, RESERVED_TOP_LEVEL, isKkError, pull } from '@kk/core';
import { type Claim, type FleetDatabase, type FleetExecutor, type FleetNode, type LogLine, type NodeStatus, type TaskOutcome, type TaskResult, parseDbUrl, transition } from '@kk/control';
import type { Kysely } from 'kysely';
import type { Call, ServerContext } from './context.js';
import { badRequest, readJson, sendJson } from './http.js';
import { hasPermission } from './tokens.js';
import {
  type Failure,
  ItemizeCounter,
  type SshAddress,
  type SshNodeSettings,
  checkSettings,
  classifyFailure,
  destination,
  parseSshAddress,
  parseStats,
  quoteArg,
  rsyncArgs,
  rsyncFilterRules,
  rsyncVerifyArgs,
  sshArgs,
  verifyProblem,
} from './ssh-node-rsync.js';

export * from './ssh-node-rsync.js';

const SETTINGS_KEY = (node: string) => `ssh-node:${node}`;
/** Itemized changes logged per attempt; later ones are counted in one line. */
const LOG_CHANGES = 200;
/** Versions kept per app in the cache (besides those in use). */
const CACHE_VERSIONS = 3;
const OFFLINE_AFTER_FAILURES = 3;
/** By default an OFFLINE node is probed this often, so its waiting tasks run soon after it is back. */
const OFFLINE_PROBE_MS = 15_000;
const STDERR_KEEP = 16 * 1024;

export interface SshNodesOptions {
  /** Where the cache and known_hosts live. Default: KK_SSH_STATE_DIR, else next to a SQLite control database, else $KK_STATE_DIR. */
  stateDir?: string;
  /** How often the worker looks for work besides being woken. Default 2 s. */
  pollMs?: number;
  /** How often an idle ssh node is probed. Default 60 s. */
  probeEveryMs?: number;
  /** How often an OFFLINE one is (its tasks wait for it). Default 15 s. */
  offlineProbeMs?: number;
  /** ssh nodes synced at once by this server. Default 4. */
  maxConcurrent?: number;
  /** rsync's --timeout (seconds without I/O). Default 120. */
  ioTimeoutS?: number;
}

export interface SshCheck {
  check: string;
  ok: boolean;
  ms: number;
  detail: string;
}

export interface SshTestResult {
  node: string;
  ok: boolean;
  status: NodeStatus;
  reason: string;
  checks: SshCheck[];
}

interface RunResult {
  status: number | null;
  signal: string | null;
  stderr: string;
  error?: Error;
}

/** Spawn, stream stdout by line, keep the tail of stderr (bounded); never rejects. */
function runProcess(cmd: string, args: string[], o: { signal?: AbortSignal; timeoutMs?: number; onLine?: (line: string) => void } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    let stderr = '';
    let settled = false;
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(o.signal ? { signal: o.signal } : {}), ...(o.timeoutMs ? { timeout: o.timeoutMs } : {}), killSignal: 'SIGTERM' });
    const lines = createInterface({ input: child.stdout!, crlfDelay: Infinity });
    lines.on('line', (l) => o.onLine?.(l));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      stderr += d;
      if (stderr.length > STDERR_KEEP * 2) stderr = stderr.slice(-STDERR_KEEP);
    });
    const done = (r: RunResult) => {
      if (settled) return;
      settled = true;
      resolve({ ...r, stderr: stderr.slice(-STDERR_KEEP) });
    };
    child.once('error', (error) => {
      if ((error as NodeJS.ErrnoException).code === 'ABORT_ERR') return; // the close event follows
      done({ status: null, signal: null, stderr, error });
    });
    child.once('close', (status, signal) => done({ status, signal, stderr }));
  });
}

/** Where the ssh cache and known_hosts live for this server. */
export function sshStateDir(srv: ServerContext): string {
  if (process.env.KK_SSH_STATE_DIR) return process.env.KK_SSH_STATE_DIR;
  if (srv.control.dialect === 'sqlite') {
    const t = parseDbUrl(srv.control.cdb.display);
    if (t.dialect === 'sqlite' && t.path && t.path !== ':memory:') return dirname(t.path);
  }
  const base = process.env.KK_STATE_DIR || join(process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'kk');
  return join(base || tmpdir(), 'server');
}

function requireGlobalAdmin(c: Call): void {
  if (!(hasPermission(c.principal, 'admin') && c.principal.scope.kind === 'global')) {
    throw new KkError('FORBIDDEN', `token ${c.principal.tokenId} needs the admin permission over everything to manage nodes`);
  }
}

const services = new WeakMap<ServerContext, SshNodes>();

export class SshNodes {
  readonly stateDir: string;
  readonly cacheDir: string;
  private readonly pollMs: number;
  private readonly probeEveryMs: number;
  private readonly offlineProbeMs: number;
  private readonly maxConcurrent: number;
  private readonly ioTimeoutS: number;
  private readonly running = new Map<string, { abort: AbortController; done: Promise<void>; key: string }>();
  private readonly probing = new Set<string>();
  private readonly probes = new Set<Promise<unknown>>();
  private readonly failures = new Map<string, number>();
  private readonly lastProbe = new Map<string, number>();
  /** The last word on each node: it answered, it cannot be reached (retryable), or it refuses us (final). */
  private readonly reachable = new Map<string, 'ok' | 'unreachable' | 'final'>();
  private readonly materializing = new Map<string, Promise<{ dir: string; hit: boolean; bytesFetched: number }>>();
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  /** Ends running probes when the server stops. */
  private readonly stopping = new AbortController();

  constructor(
    private readonly srv: ServerContext,
    opts: SshNodesOptions = {},
  ) {
    this.stateDir = opts.stateDir ?? sshStateDir(srv);
    this.cacheDir = join(this.stateDir, 'ssh-cache');
    const env = (name: string) => (process.env[name] ? Number(process.env[name]) : undefined);
    this.pollMs = opts.pollMs ?? env('KK_SSH_POLL_MS') ?? 2_000;
    this.probeEveryMs = opts.probeEveryMs ?? env('KK_SSH_PROBE_MS') ?? 60_000;
    this.offlineProbeMs = opts.offlineProbeMs ?? env('KK_SSH_OFFLINE_PROBE_MS') ?? OFFLINE_PROBE_MS;
    this.maxConcurrent = opts.maxConcurrent ?? 4;
    this.ioTimeoutS = opts.ioTimeoutS ?? 120;
  }

  /** Start the worker; it is also woken whenever the fleet says work became claimable. */
  start(): void {
    const fleet = this.srv.control.fleet;
    const prev = fleet.onWork;
    fleet.onWork = (ids) => {
      prev(ids);
      this.wake();
    };
    this.timer = setInterval(() => this.wake(), this.pollMs);
    this.timer.unref();
    this.wake();
  }

  /** Stop: no new claims; running rsyncs are ended and their attempts reported as retryable. */
  async close(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.stopping.abort();
    for (const r of this.running.values()) r.abort.abort(new KkError('BACKEND', 'the kk server is stopping'));
    await Promise.allSettled([this.round, ...this.probes, ...[...this.running.values()].map((r) => r.done)]);
  }

  /** One round now (tests), then wait for what it started. */
  async tick(): Promise<void> {
    await this.roundOnce();
    await Promise.allSettled([...this.running.values()].map((r) => r.done));
  }

  wake(): void {
    if (this.stopped) return;
    if (this.round) {
      this.again = true;
      return;
    }
    this.round = this.roundOnce().finally(() => {
      this.round = undefined;
      if (this.again && !this.stopped) {
        this.again = false;
        this.wake();
      }
    });
  }

  private async roundOnce(): Promise<void> {
    try {
      const nodes = await this.srv.control.fleet.nodes({ kind: 'ssh' });
      if (!nodes.length) return;
      // Only nodes some target uses are probed in the background (the test probes any on demand).
      const used = new Set((await this.srv.control.fleet.targets()).map((t) => t.node));
      const now = Date.now();
      // One query for the ssh nodes that have a task due, instead of a claim transaction per node.
      const db = this.srv.control.cdb.db as unknown as Kysely<FleetDatabase>;
      const due = new Set(
        (await db.selectFrom('tasks').innerJoin('nodes', 'nodes.id', 'tasks.node').select('tasks.node').distinct().where('nodes.kind', '=', 'ssh').where('tasks.state', 'in', ['PENDING', 'RETRYING']).where('tasks.next_attempt_ms', '<=', now).execute()).map((r) => r.node),
      );
      for (const n of nodes) {
        if (this.stopped) return;
        if (this.running.has(n.id)) continue;
        // An OFFLINE node's tasks wait (as an agent's do) until a probe reaches it, unless what
        // keeps it offline is final (login refused, host key): then an attempt fails with that cause.
        const down = n.status === 'OFFLINE' || (this.failures.get(n.id) ?? 0) >= OFFLINE_AFTER_FAILURES;
        const claimable = !down || this.reachable.get(n.id) === 'final';
        if (due.has(n.id) && n.schedulable && claimable && this.running.size < this.maxConcurrent) {
          const claim = await this.srv.control.fleet.claim(n.id);
          if (claim) {
            this.startRun(n, claim);
            continue;
          }
        }
        const every = n.status === 'OFFLINE' ? Math.min(this.probeEveryMs, this.offlineProbeMs) : this.probeEveryMs;
        if (used.has(n.id) && !this.probing.has(n.id) && now - (this.lastProbe.get(n.id) ?? 0) >= every) {
          this.lastProbe.set(n.id, now);
          this.probing.add(n.id);
          const p: Promise<unknown> = this.probe(n)
            .catch((err) => this.srv.log.warn('ssh probe failed', { node: n.id, err: String((err as Error)?.message ?? err) }))
            .finally(() => {
              this.probing.delete(n.id);
              this.probes.delete(p);
            });
          this.probes.add(p);
        }
      }
    } catch (err) {
      this.srv.log.warn('ssh node round failed', { err: String((err as Error)?.message ?? err) });
    }
  }

  // ---------------------------------------------------------------- settings and ssh options

  async settings(nodeId: string): Promise<SshNodeSettings> {
    return checkSettings((await this.srv.control.settings.get<SshNodeSettings>(SETTINGS_KEY(nodeId))) ?? {});
  }

  async putSettings(nodeId: string, s: SshNodeSettings): Promise<void> {
    await this.srv.control.settings.put(SETTINGS_KEY(nodeId), checkSettings(s));
  }

  /** ssh arguments and the address of a node. */
  async reach(n: FleetNode): Promise<{ address: SshAddress; ssh: string[]; settings: SshNodeSettings; where: string }> {
    const address = parseSshAddress(n.address);
    const settings = await this.settings(n.id);
    const ssh = sshArgs(address, settings, { knownHosts: join(this.stateDir, 'ssh_known_hosts'), ...(process.env.KK_SSH_IDENTITY ? { identityFile: process.env.KK_SSH_IDENTITY } : {}) });
    return { address, ssh, settings, where: `node ${n.name} (${n.address})` };
  }

  // ---------------------------------------------------------------- status from probes and syncs

  /** Record whether the node answered: ONLINE on success, DEGRADED after one failure, OFFLINE after three. */
  async record(nodeId: string, ok: boolean, reason: string, final = false): Promise<void> {
    this.reachable.set(nodeId, ok ? 'ok' : final ? 'final' : 'unreachable');
    const db = this.srv.control.cdb.db as unknown as Kysely<FleetDatabase>;
    const row = await db.selectFrom('nodes').select(['status', 'status_reason']).where('id', '=', nodeId).executeTakeFirst();
    if (!row) return;
    const from = row.status as NodeStatus;
    const now = Date.now();
    let to: NodeStatus = from;
    let why = reason;
    if (ok) {
      this.failures.set(nodeId, 0);
      to = 'ONLINE';
    } else {
      const f = (this.failures.get(nodeId) ?? 0) + 1;
      this.failures.set(nodeId, f);
      to = f >= OFFLINE_AFTER_FAILURES ? 'OFFLINE' : from === 'OFFLINE' ? 'OFFLINE' : 'DEGRADED';
      why = `${reason} (${f} failed in a row)`;
    }
    await this.srv.control.cdb.writeTx(async (tx) => {
      const t = tx as unknown as FleetExecutor;
      const set = ok ? { last_heartbeat_ms: now } : {};
      if (to !== from) await transition(t, this.srv.control.events, { entity: 'node', id: nodeId, from, to, reason: why.slice(0, 500), set }, { by: 'system', time: new Date(now).toISOString() });
      else if (ok) await t.updateTable('nodes').set(set).where('id', '=', nodeId).execute();
      // Still down, for another reason than it says (e.g. "not probed yet"): say the current one.
      else if (!row.status_reason.startsWith(reason)) await t.updateTable('nodes').set({ status_reason: why.slice(0, 500), updated: new Date(now).toISOString() }).where('id', '=', nodeId).execute();
    });
  }

  /** `ssh ... true`: the node answers with our key. */
  async probe(n: FleetNode): Promise<SshCheck> {
    const t0 = Date.now();
    let check: SshCheck;
    let final = false;
    try {
      const r = await this.reach(n);
      const out = await runProcess('ssh', [...r.ssh, destination(r.address), 'true'], { timeoutMs: 30_000, signal: this.stopping.signal });
      if (this.stopped) return { check: 'ssh true', ok: false, ms: Date.now() - t0, detail: 'the server is stopping' };
      if (out.status === 0) check = { check: 'ssh true', ok: true, ms: Date.now() - t0, detail: `ssh login as ${r.address.user ?? 'the default user'} works` };
      else {
        const f = out.error ? { reason: `cannot run ssh: ${out.error.message}`, retryable: false } : classifyFailure('ssh', out.status, out.signal, out.stderr, r.where);
        check = { check: 'ssh true', ok: false, ms: Date.now() - t0, detail: f.reason };
        final = !f.retryable;
      }
    } catch (err) {
      check = { check: 'ssh true', ok: false, ms: Date.now() - t0, detail: (err as Error).message };
      final = true;
    }
    this.lastProbe.set(n.id, Date.now());
    await this.record(n.id, check.ok, check.ok ? 'ssh probe answered' : `ssh probe failed: ${check.detail}`, final);
    return check;
  }

  /** The connectivity test: `ssh ... true`, then `rsync --list-only` of every target path of the node. */
  async test(nodeId: string): Promise<SshTestResult> {
    const n = await this.srv.control.fleet.node(nodeId);
    if (n.kind !== 'ssh') throw new KkError('CONFIG_INVALID', `node ${n.name} is an agent node; its test is its heartbeat`);
    const checks = [await this.probe(n)];
    if (checks[0]!.ok) {
      const r = await this.reach(n);
      for (const t of await this.srv.control.fleet.targets({ node: n.id })) {
        const t0 = Date.now();
        let entries = 0;
        const out = await runProcess('rsync', ['--list-only', ...(r.settings.rsync_path ? [`--rsync-path=${r.settings.rsync_path}`] : []), '-e', ['ssh', ...r.ssh].join(' '), `${destination(r.address, true)}:${t.path}/`], {
          timeoutMs: 60_000,
          onLine: () => void entries++,
        });
        const name = `rsync --list-only ${t.path}`;
        if (out.status === 0) checks.push({ check: name, ok: true, ms: Date.now() - t0, detail: `${t.path} lists ${Math.max(0, entries - 1)} entries` });
        else if (/No such file or directory/.test(out.stderr) && out.status === 23) checks.push({ check: name, ok: true, ms: Date.now() - t0, detail: `${t.path} does not exist yet; the first sync creates it` });
        else {
          const f = out.error ? { reason: `cannot run rsync: ${out.error.message}` } : classifyFailure('rsync', out.status, out.signal, out.stderr, r.where);
          checks.push({ check: name, ok: false, ms: Date.now() - t0, detail: f.reason });
        }
      }
    }
    const bad = checks.find((c) => !c.ok);
    const now = await this.srv.control.fleet.node(n.id);
    return { node: n.id, ok: !bad, status: now.status, reason: bad ? bad.detail : checks.map((c) => c.detail).join('; '), checks };
  }

  // ---------------------------------------------------------------- running one task

  private startRun(n: FleetNode, claim: Claim): void {
    const abort = new AbortController();
    const key = `${claim.task.project}/${claim.task.app}/${claim.task.version}`;
    const done = this.run(n, claim, abort)
      .catch((err) => this.srv.log.error('ssh node task failed unexpectedly', { node: n.id, task: claim.task.id, err: String((err as Error)?.stack ?? err) }))
      .finally(() => {
        this.running.delete(n.id);
        this.wake();
      });
    this.running.set(n.id, { abort, done, key });
  }

  private async run(n: FleetNode, claim: Claim, abort: AbortController): Promise<void> {
    const fleet = this.srv.control.fleet;
    const { task, attempt_id } = claim;
    let logs: LogLine[] = [];
    let stage = 'claimed';
    let progress: number | undefined;
    let stale = false;
    const send = async (outcome?: TaskOutcome) => {
      const batch = logs;
      logs = [];
      try {
        await fleet.report(n.id, task.id, attempt_id, { stage, ...(progress !== undefined ? { progress } : {}), logs: batch, ...(outcome ? { outcome } : {}) });
      } catch (err) {
        if (isKkError(err, 'LOCKED') || isKkError(err, 'NOT_FOUND')) {
          // Fenced: the attempt is no longer current (canceled, or its lease given away). Stop.
          stale = true;
          abort.abort(err);
          return;
        }
        logs = [...batch, ...logs].slice(-500);
        throw err;
      }
    };
    const log = (line: string, level: LogLine['level'] = 'info') => logs.push({ time: new Date().toISOString(), level, line });
    // Reports renew the lease: send one every third of it (and whatever was logged meanwhile).
    const every = Math.max(500, Math.min(5_000, Math.floor(claim.lease_ms / 3)));
    const renew = setInterval(() => void send().catch(() => {}), every);
    let outcome: TaskOutcome;
    try {
      stage = 'materialize';
      progress = 0;
      const m = await this.materialize(task.project, task.app, task.version, task.manifest, log);
      stage = 'rsync';
      progress = 0.5;
      if (task.source === 'verify') {
        stage = 'verify';
        outcome = await this.verify(n, claim, m.dir, m.ignore, abort.signal, log);
      } else {
        // A local pause on the node (`kk pause --path`, in the reserved .kk-staging/) holds for the server's rsync too.
        const held = await this.localPause(n, claim);
        // on_local_change: fail: nothing is applied over files changed on the node since kk wrote them.
        const from = !held && claim.target.on_local_change === 'fail' && task.from_version ? task.from_version : undefined;
        const prev = from ? await this.materialize(task.project, task.app, from, null, log).catch(() => undefined) : undefined;
        if (from && !prev) log(`on_local_change: fail, but version ${from} (what kk wrote there last) cannot be read any more; syncing without the check`, 'warn');
        const blocked = prev ? await this.localChanges(n, claim, { ...prev, version: from! }, abort.signal, log) : undefined;
        outcome = held ?? blocked ?? (await this.rsync(n, claim, m.dir, m.ignore, abort.signal, log));
        if (outcome.ok) outcome.result = { ...outcome.result, cache: { hit: m.hit, bytes_fetched: m.bytesFetched } };
      }
    } catch (err) {
      outcome = isKkError(err)
        ? { ok: false, code: err.code, reason: err.hint ? `${err.message} (${err.hint})` : err.message }
        : (err as NodeJS.ErrnoException)?.code === 'ENOSPC'
          ? { ok: false, code: 'DISK_FULL', reason: `the server's ssh cache (${this.cacheDir}) is out of space: ${(err as Error).message}`, retryable: true }
          : { ok: false, code: 'INTERNAL', reason: String((err as Error)?.message ?? err) };
    } finally {
      clearInterval(renew);
    }
    if (stale) return;
    if (abort.signal.aborted && !outcome.ok) outcome = { ok: false, code: 'BACKEND', reason: `the sync of ${n.name} was stopped: the kk server is stopping (it is retried)`, retryable: true };
    stage = outcome.ok ? 'done' : 'failed';
    progress = outcome.ok ? 1 : progress;
    for (let i = 0; i < 5 && !stale; i++) {
      try {
        await send(outcome);
        return;
      } catch (err) {
        this.srv.log.warn('ssh node: cannot record the outcome yet', { task: task.id, err: String((err as Error)?.message ?? err) });
        await new Promise((r) => setTimeout(r, 500 * (i + 1)));
      }
    }
  }

  /** The version as files in the cache, pulled once per (project, app, version, manifest). */
  private async materialize(project: string, app: string, version: string, manifest: string | null, log: (l: string) => void): Promise<{ dir: string; hit: boolean; bytesFetched: number; ignore: string[] }> {
    const info = await this.srv.store.resolveVersion(project, app, version);
    if (manifest && info.manifest !== manifest) {
      throw new KkError('MANIFEST_INVALID', `version ${version} of ${project}/${app} now names manifest ${info.manifest}, but the task was for ${manifest}`, { hint: 'the version was replaced in the store; sync the target again' });
    }
    const ignore = (await this.srv.manifest(info.manifest)).manifest.ignore ?? [];
    const key = `${project}/${app}/${version}`;
    for (let i = 0; i < 3; i++) {
      const busy = this.materializing.get(key);
      if (!busy) break;
      await busy.catch(() => {});
    }
    const seg = (s: string) => (/^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(s) && !s.includes('..') ? s : encodeURIComponent(s).replace(/\./g, '%2E'));
    const appDir = join(this.cacheDir, seg(project), seg(app));
    const dir = join(appDir, seg(version));
    const marker = `${dir}.ok`;
    const job = (async () => {
      const have = await readFile(marker, 'utf8').then((s) => JSON.parse(s) as { manifest?: string }, () => undefined);
      if (have?.manifest === info.manifest && (await stat(dir).then((s) => s.isDirectory(), () => false))) {
        const t = new Date();
        await utimes(marker, t, t).catch(() => {});
        log(`version ${version} is in the server's cache (${dir})`);
        return { dir, hit: true, bytesFetched: 0 };
      }
      await rm(marker, { force: true });
      await mkdir(appDir, { recursive: true });
      log(`materializing ${project}/${app} ${version} (${info.manifest}) into the server's cache`);
      const r = await pull({ store: this.srv.store, hasher: this.srv.hasher, project, app, version, target: dir, stateDir: join(this.cacheDir, '.kk-state'), concurrency: 8, command: 'kk serve (ssh nodes)', adopt: true });
      await writeFile(marker, JSON.stringify({ manifest: r.manifest, version, time: new Date().toISOString() }));
      log(`cached: ${r.paths.added.length + r.paths.changed.length} file(s), ${r.bytesFetched} bytes fetched from the store`);
      return { dir, hit: false, bytesFetched: r.bytesFetched };
    })();
    this.materializing.set(key, job);
    try {
      const out = await job;
      await this.prune(appDir).catch((err) => this.srv.log.warn('ssh cache: pruning failed', { dir: appDir, err: String(err) }));
      return { ...out, ignore };
    } finally {
      if (this.materializing.get(key) === job) this.materializing.delete(key);
    }
  }

  /** Keep the newest CACHE_VERSIONS versions of an app (and any in use); remove the rest. */
  private async prune(appDir: string): Promise<void> {
    const inUse = new Set([...this.running.values()].map((r) => r.key));
    for (const k of this.materializing.keys()) inUse.add(k);
    const markers = (await readdir(appDir)).filter((f) => f.endsWith('.ok'));
    const aged = await Promise.all(markers.map(async (f) => ({ f, t: (await stat(join(appDir, f)).catch(() => undefined))?.mtimeMs ?? 0 })));
    aged.sort((a, b) => b.t - a.t);
    for (const { f } of aged.slice(CACHE_VERSIONS)) {
      const dir = join(appDir, f.slice(0, -3));
      const key = dir.slice(this.cacheDir.length + 1).split('/').map(decodeURIComponent).join('/');
      if (inUse.has(key)) continue;
      await rm(join(appDir, f), { force: true });
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Verify (DESIGN 13, seed 002) on an ssh node: an rsync dry run with checksums against the
   * materialized version. Nothing differing is OK; anything else is a CONFLICT naming the first
   * differences (overlay: files the version lacks are allowed).
   */
  private async verify(n: FleetNode, claim: Claim, src: string, versionIgnore: string[], signal: AbortSignal, log: (l: string, level?: LogLine['level']) => void): Promise<TaskOutcome> {
    const { task, target } = claim;
    log(`verifying ${target.path} against ${task.project}/${task.app} ${task.version}: rsync -rlptcn${target.strategy === 'mirror' ? ' --delete' : ''} (a dry run with checksums)`);
    const d = await this.dryRun(n, claim, src, versionIgnore, target.strategy === 'mirror', signal, log, target.mode === 'skip-existing');
    if ('failure' in d) return d.failure;
    const result: TaskResult = { verified: d.count === 0, files_checked: d.filesChecked, problems: d.problems, via: 'rsync' };
    if (d.count === 0) {
      log(`verify OK: ${target.path} holds exactly ${task.version}`);
      return { ok: true, result };
    }
    const lines = d.problems.map((p) => `${p.path} (${p.problem})`);
    for (const l of lines) log(`differs: ${l}`, 'error');
    return { ok: false, code: 'CONFLICT', reason: `${d.count} difference(s) between ${target.path} and ${task.version}: ${lines.slice(0, 10).join('; ')}${d.count > 10 ? '; ...' : ''}`, retryable: false, result };
  }

  /**
   * `on_local_change: fail`: files of the version kk last wrote there (`from`) whose content was
   * changed or that were removed on the node since. Undefined when there are none.
   */
  private async localChanges(n: FleetNode, claim: Claim, from: { dir: string; ignore: string[]; version: string }, signal: AbortSignal, log: (l: string, level?: LogLine['level']) => void): Promise<TaskOutcome | undefined> {
    const d = await this.dryRun(n, claim, from.dir, from.ignore, false, signal, log);
    if ('failure' in d) return d.failure;
    const changed = d.problems.filter((p) => p.problem === 'changed locally' || p.problem === 'missing');
    if (!changed.length) return undefined;
    const lines = changed.map((p) => `${p.path} (${p.problem === 'missing' ? 'removed' : 'changed'} on the node)`);
    for (const l of lines) log(`local change: ${l}`, 'error');
    return {
      ok: false,
      code: 'TARGET_CONFLICT',
      reason: `${changed.length}${d.problems.length >= 50 ? '+' : ''} file(s) of ${from.version} were changed on node ${n.name} in ${claim.target.path} since kk wrote them, and the target says on_local_change: fail: ${lines.slice(0, 10).join('; ')} (nothing was applied; restore or keep those files, then sync again)`,
      retryable: false,
    };
  }

  /** The node's local pause of the target directory (PAUSED naming who, when and why), or why we could not look. */
  private async localPause(n: FleetNode, claim: Claim): Promise<TaskOutcome | undefined> {
    const r = await this.reach(n);
    // Where core's pauseLocal keeps the record (core/src/apply/pause.ts).
    const file = `${claim.target.path}/${RESERVED_TOP_LEVEL}/paused.json`;
    let text = '';
    const out = await runProcess('ssh', [...r.ssh, destination(r.address), `cat ${quoteArg(file)} 2>/dev/null; true`], { timeoutMs: 60_000, signal: this.stopping.signal, onLine: (l) => void (text.length < 65536 && (text += `${l}\n`)) });
    if (out.status !== 0) {
      const f: Failure = out.error ? { code: 'SSH_FAILED', reason: `cannot run ssh on the server: ${out.error.message} (install the OpenSSH client)`, retryable: false } : classifyFailure('ssh', out.status, out.signal, out.stderr, r.where);
      if (f.code === 'SSH_UNREACHABLE') await this.record(n.id, false, f.reason).catch(() => {});
      return { ok: false, code: f.code, reason: f.reason, retryable: f.retryable };
    }
    text = text.trim();
    if (!text) return undefined;
    let p: { by?: string; since?: string; reason?: string } = {};
    try {
      p = JSON.parse(text) as typeof p;
    } catch {
      p = { reason: '(unreadable pause record)' };
    }
    return {
      ok: false,
      code: 'PAUSED',
      reason: `${claim.target.path} on node ${n.name} is paused by ${p.by ?? 'unknown'}${p.since ? ` since ${p.since}` : ''}: ${p.reason ?? ''} (nothing was changed; run \`kk resume --path ${claim.target.path}\` on the node when it may be deployed to again, then sync)`,
      retryable: false,
    };
  }

  /** An itemizing rsync dry run with checksums from `src` to the target: what differs on the node (the first 50), or why it failed. */
  private async dryRun(n: FleetNode, claim: Claim, src: string, versionIgnore: string[], mirror: boolean, signal: AbortSignal, log: (l: string, level?: LogLine['level']) => void, skipExisting = false): Promise<{ failure: TaskOutcome } | { problems: { path: string; problem: string }[]; count: number; filesChecked: number | null }> {
    const { target } = claim;
    const r = await this.reach(n);
    const filterFile = await this.filterFile(claim, versionIgnore);
    const args = rsyncVerifyArgs({ ssh: r.ssh, filterFile, src, dest: target.path, address: r.address, mirror, skipExisting, settings: r.settings, timeoutS: this.ioTimeoutS });
    const problems: { path: string; problem: string }[] = [];
    let count = 0;
    let stats = '';
    let inStats = false;
    const out = await runProcess('rsync', args, {
      signal,
      onLine: (line) => {
        if (line.startsWith('Number of files:')) inStats = true;
        if (inStats) {
          if (stats.length < 4096) stats += `${line}\n`;
          return;
        }
        const p = verifyProblem(line);
        if (!p) return;
        count++;
        if (problems.length < 50) problems.push(p);
      },
    });
    await rm(filterFile, { force: true });
    if (out.status !== 0) {
      const f: Failure = out.error ? { code: 'RSYNC_MISSING', reason: `cannot run rsync on the server: ${out.error.message} (install rsync)`, retryable: false } : classifyFailure('rsync', out.status, out.signal, out.stderr, r.where);
      for (const l of out.stderr.split(/\r?\n/).map((x) => x.trim()).filter(Boolean).slice(-10)) log(l, 'error');
      if (f.code === 'SSH_UNREACHABLE') await this.record(n.id, false, f.reason).catch(() => {});
      return { failure: { ok: false, code: f.code, reason: f.reason, retryable: f.retryable } };
    }
    await this.record(n.id, true, 'rsync answered').catch(() => {});
    const st = parseStats(stats);
    return { problems, count, filesChecked: st.regular_files ?? st.files ?? null };
  }

  private async filterFile(claim: Claim, versionIgnore: string[]): Promise<string> {
    const filterDir = join(this.cacheDir, '.filters');
    await mkdir(filterDir, { recursive: true });
    const file = join(filterDir, `${claim.attempt_id}.rules`);
    await writeFile(file, `${rsyncFilterRules(claim.target, versionIgnore).join('\n')}\n`);
    return file;
  }

  private async rsync(n: FleetNode, claim: Claim, src: string, versionIgnore: string[], signal: AbortSignal, log: (l: string, level?: LogLine['level']) => void): Promise<TaskOutcome> {
    const { target } = claim;
    const r = await this.reach(n);
    const filterFile = await this.filterFile(claim, versionIgnore);
    const args = rsyncArgs({ ssh: r.ssh, filterFile, src, dest: target.path, address: r.address, mirror: target.strategy === 'mirror', skipExisting: target.mode === 'skip-existing', settings: r.settings, timeoutS: this.ioTimeoutS });
    log(`rsync ${args.slice(0, -2).filter((a) => a !== '-e' && !a.startsWith('ssh ')).join(' ')} ${destination(r.address, true)}:${target.path}/`);
    const count = new ItemizeCounter();
    let logged = 0;
    let stats = '';
    let inStats = false;
    const t0 = Date.now();
    const out = await runProcess('rsync', args, {
      signal,
      onLine: (line) => {
        if (!inStats && count.add(line)) {
          if (logged++ < LOG_CHANGES) log(line);
          return;
        }
        if (line.startsWith('Number of files:')) inStats = true;
        if (inStats && stats.length < 4096) stats += `${line}\n`;
      },
    });
    await rm(filterFile, { force: true });
    if (logged > LOG_CHANGES) log(`... and ${logged - LOG_CHANGES} more change(s) not logged`);
    const seconds = Math.round(Date.now() - t0) / 1000;
    if (out.status === 0) {
      const s = parseStats(stats);
      const result: TaskResult = {
        files_added: count.added,
        files_changed: count.changed,
        files_deleted: count.deleted,
        files_meta_only: count.metaOnly,
        bytes_fetched: s.bytes_sent ?? 0,
        seconds,
        up_to_date: count.added + count.changed + count.deleted === 0,
        manifest: claim.task.manifest,
        via: 'rsync',
        rsync: s,
      };
      log(`rsync done: ${count.added} added, ${count.changed} changed, ${count.deleted} deleted, ${s.bytes_sent ?? 0} bytes sent in ${seconds} s`);
      await this.record(n.id, true, 'rsync succeeded').catch(() => {});
      return { ok: true, result };
    }
    const f: Failure = out.error ? { code: 'RSYNC_MISSING', reason: `cannot run rsync on the server: ${out.error.message} (install rsync)`, retryable: false } : classifyFailure('rsync', out.status, out.signal, out.stderr, r.where);
    for (const l of out.stderr.split(/\r?\n/).map((x) => x.trim()).filter(Boolean).slice(-10)) log(l, 'error');
    if (f.code === 'SSH_UNREACHABLE') await this.record(n.id, false, f.reason).catch(() => {});
    else if (f.code === 'AUTH' || f.code === 'SSH_HOST_KEY') await this.record(n.id, false, f.reason, true).catch(() => {});
    return { ok: false, code: f.code, reason: f.reason, retryable: f.retryable };
  }
}

/** The connectivity test of an ssh node (POST /api/sync/nodes/{id}/test calls it). */
export async function testSshNode(srv: ServerContext, nodeId: string): Promise<SshTestResult> {
  return (services.get(srv) ?? new SshNodes(srv)).test(nodeId);
}

/** The ssh node worker and its routes: GET/PUT /api/sync/nodes/{id}/ssh (the node's ssh settings; POST .../test in routes/sync.ts calls testSshNode). */
export function registerSshNodes(srv: ServerContext, opts: SshNodesOptions = {}): SshNodes {
  const svc = new SshNodes(srv, opts);
  services.set(srv, svc);
  const sshNode = async (c: Call) => {
    requireGlobalAdmin(c);
    const n = await srv.control.fleet.node(c.params.id!);
    if (n.kind !== 'ssh') throw badRequest(`node ${n.name} is an agent node; only ssh nodes have ssh settings`);
    return n;
  };
  srv.router.add('GET', '/api/sync/nodes/{id}/ssh', {
    handler: async (c) => {
      const n = await sshNode(c);
      await sendJson(c.req, c.res, 200, { node: n.id, address: n.address, settings: await svc.settings(n.id), state_dir: svc.stateDir });
    },
  });
  srv.router.add('PUT', '/api/sync/nodes/{id}/ssh', {
    handler: async (c) => {
      const n = await sshNode(c);
      const b = await readJson<Record<string, unknown>>(c.req, 64 * 1024);
      await svc.putSettings(n.id, checkSettings(b));
      await sendJson(c.req, c.res, 200, { node: n.id, address: n.address, settings: await svc.settings(n.id) });
    },
  });
  svc.start();
  return svc;
}
