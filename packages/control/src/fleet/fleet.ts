// The fleet's rules (DESIGN 13) over the schema of ./migration.ts: enrolment, node liveness,
// targets and their pauses, sync tasks (creation, claims, leases with fencing, reports, retries),
// and the periodic sweep. No HTTP here: the server's routes call these methods.
//
// Two clocks, kept apart: a node's liveness (heartbeats -> ONLINE/OFFLINE) and a task's ownership
// (a lease with an attempt id, renewed by reports and heartbeats). A report naming an attempt that
// is no longer current is refused, so an agent that was presumed dead cannot overwrite the result
// of the attempt that replaced it.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { posix } from 'node:path';
import { KkError, assertAppName, assertProjectName, assertVersionSpec } from '@kk/core';
import type { Kysely, Selectable } from 'kysely';
import type { ControlDb, Executor } from '../db.js';
import type { Events } from '../events.js';
import { timeId } from '../util.js';
import { type FleetExecutor, type NodeStatus, type TaskState, transition } from './machine.js';
import { DEFAULT_TASK_RETRY, taskBackoffMs, isRetryable } from './retry.js';
import type { FleetDatabase, FleetProjectsTable, NodesTable, TargetsTable, TasksTable } from './schema.js';

export interface FleetOptions {
  /** How often agents heartbeat (sent to them). Default 10 s. */
  heartbeatIntervalMs?: number;
  /** An agent without a heartbeat for this long is OFFLINE. Default 50 s. */
  offlineAfterMs?: number;
  /** How long a claimed attempt holds its task without a report or heartbeat. Default 30 s. */
  leaseMs?: number;
  /** Log lines kept per task; later ones are counted, not stored. Default 2000. */
  logMax?: number;
  /** A verify not finished this long after it was queued is a CONFLICT (seed 002: 2 min). Default 120 s. */
  verifyTimeoutMs?: number;
  /** No lease expires and no agent goes OFFLINE before this time (ms). Default: start + leaseMs, so agents can reconnect after a server restart. */
  graceUntilMs?: number;
  /** The clock (tests move it). */
  now?: () => number;
  random?: () => number;
}

export type Tags = Record<string, string>;

export interface FleetNode {
  id: string;
  name: string;
  kind: 'agent' | 'ssh';
  address: string | null;
  tags: Tags;
  status: NodeStatus;
  status_reason: string;
  status_since: string;
  last_heartbeat: string | null;
  info: Record<string, unknown> | null;
  schedulable: boolean;
  drain_reason: string | null;
  created: string;
  updated: string;
}

export interface ProjectSettings {
  project: string;
  max_parallel_nodes: number;
  retry: { max_attempts: number; base_ms: number; max_ms: number };
  offline_policy: 'wait' | 'skip';
  degraded_after: number;
  sync_degraded: boolean;
  degraded_reason: string | null;
  degraded_since: string | null;
}

export const TARGET_MODES = ['full', 'skip-existing'] as const;
export type TargetMode = (typeof TARGET_MODES)[number];

/** A target's sync mode (default `full`), or CONFIG_INVALID naming the accepted ones. */
export function targetMode(m: unknown): TargetMode {
  if (m === undefined || m === null) return 'full';
  if (typeof m === 'string' && (TARGET_MODES as readonly string[]).includes(m)) return m as TargetMode;
  throw new KkError('CONFIG_INVALID', `mode must be full or skip-existing, not ${JSON.stringify(m)}`, { hint: 'full compares every file; skip-existing only adds files the directory lacks' });
}

export interface Target {
  id: string;
  project: string;
  app: string;
  node: string;
  path: string;
  strategy: 'mirror' | 'overlay';
  include: string[];
  exclude: string[];
  follows: 'promoted' | 'latest' | 'pinned';
  pinned: string | null;
  on_local_change: 'overwrite' | 'fail';
  /** How a sync applies (seed 004): `full` compares every file; `skip-existing` only adds files the directory lacks, never comparing or deleting existing ones. */
  mode: TargetMode;
  paused: { reason: string; by: string; since: string; until: string | null } | null;
  current_version: string | null;
  last_sync: string | null;
  last_status: string | null;
  consecutive_failures: number;
  created: string;
  updated: string;
}

export interface TaskResult {
  files_added?: number;
  files_changed?: number;
  files_deleted?: number;
  bytes_fetched?: number;
  seconds?: number;
  up_to_date?: boolean;
  [k: string]: unknown;
}

export interface Task {
  id: string;
  target: string;
  project: string;
  app: string;
  node: string;
  version: string;
  manifest: string | null;
  source: string;
  state: TaskState;
  attempts: number;
  max_attempts: number;
  next_attempt: string | null;
  lease_expires: string | null;
  attempt_id: string | null;
  stage: string | null;
  progress: number | null;
  result: TaskResult | null;
  error: { code: string; reason: string } | null;
  log: { count: number; dropped: number };
  from_version: string | null;
  created: string;
  started: string | null;
  finished: string | null;
  updated: string;
}

export interface LogLine {
  time?: string;
  level?: 'info' | 'warn' | 'error';
  line: string;
}

/** What an agent sends when its attempt ends. */
export type TaskOutcome =
  | { ok: true; result: TaskResult }
  | { ok: false; code: string; reason: string; retryable?: boolean; result?: TaskResult };

export interface Claim {
  task: Task;
  target: Target;
  attempt_id: string;
  lease_ms: number;
}

export interface HistoryEntry {
  task: string;
  node: string;
  source: string;
  from_version: string | null;
  to_version: string;
  files: { added: number | null; changed: number | null; deleted: number | null };
  bytes: number | null;
  duration_ms: number | null;
  status: string;
  error: { code: string; reason: string } | null;
  time: string;
}

/** The last verify of a target: OK, CONFLICT (a file differs, or it timed out), running (queued or running) or canceled. */
export interface VerifyStatus {
  task: string;
  version: string;
  state: 'OK' | 'CONFLICT' | 'RUNNING' | 'CANCELED';
  time: string;
  error: { code: string; reason: string } | null;
}

export const DEFAULT_MAX_PARALLEL_NODES = 5;
export const DEFAULT_DEGRADED_AFTER = 3;
const REG_RE = /^kkr_([0-9a-f]{20})_([A-Za-z0-9_-]{43})$/;
const NODE_RE = /^kkn_([0-9a-f]{20})_([A-Za-z0-9_-]{43})$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const TAG_RE = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;

const sha256hex = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const iso = (ms: number) => new Date(ms).toISOString();
const json = <T>(s: string | null, d: T): T => (s == null ? d : (JSON.parse(s) as T));

function hashMatches(stored: string, secret: string): boolean {
  const a = Buffer.from(stored);
  const b = Buffer.from(sha256hex(secret));
  return a.length === b.length && timingSafeEqual(a, b);
}

function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e?.code === '23505' || e?.code === 'SQLITE_CONSTRAINT_UNIQUE' || e?.code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

export function validateTags(tags: unknown): Tags {
  if (tags == null) return {};
  if (typeof tags !== 'object' || Array.isArray(tags)) throw new KkError('CONFIG_INVALID', 'tags must be an object of key: value strings');
  for (const [k, v] of Object.entries(tags)) {
    if (!TAG_RE.test(k) || typeof v !== 'string' || v.length > 200) {
      throw new KkError('CONFIG_INVALID', `invalid tag ${JSON.stringify(k)}=${JSON.stringify(v)}`, { hint: 'tag keys are letters, digits and . _ / -; values are strings up to 200 characters' });
    }
  }
  return { ...(tags as Tags) };
}

/** `k=v,k2=v2` (the CLI's --tags) as an object. */
export function parseTags(text: string): Tags {
  const out: Tags = {};
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new KkError('CONFIG_INVALID', `invalid tag ${JSON.stringify(part)}: use key=value`);
    out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return validateTags(out);
}

function assertNodeName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new KkError('INVALID_NAME', `invalid node name ${JSON.stringify(name)}`, { hint: 'use 1-63 letters, digits, dots, dashes or underscores, starting with a letter or digit' });
  }
}

/** A target directory: absolute, normalized, not the root. */
export function assertTargetPath(p: unknown): asserts p is string {
  if (typeof p !== 'string' || !p.startsWith('/') || p.includes('\0') || posix.normalize(p) !== p || p === '/' || p.endsWith('/') || p.length > 4096) {
    throw new KkError('UNSAFE_PATH', `bad target path ${JSON.stringify(p)}: it must be an absolute, normalized directory path other than /`, { hint: 'for example /srv/project-a' });
  }
}

function patterns(v: unknown, what: string): string[] {
  if (v == null) return [];
  if (!Array.isArray(v) || v.some((p) => typeof p !== 'string' || p === '' || p.includes('\n'))) {
    throw new KkError('CONFIG_INVALID', `${what} must be a list of gitignore-style patterns`);
  }
  return [...v];
}

export function nodeFromRow(r: Selectable<NodesTable>): FleetNode {
  return {
    id: r.id,
    name: r.name,
    kind: r.kind as FleetNode['kind'],
    address: r.address,
    tags: json(r.tags, {}),
    status: r.status as NodeStatus,
    status_reason: r.status_reason,
    status_since: r.status_since,
    last_heartbeat: r.last_heartbeat_ms == null ? null : iso(Number(r.last_heartbeat_ms)),
    info: json(r.info, null),
    schedulable: Number(r.schedulable) === 1,
    drain_reason: r.drain_reason,
    created: r.created,
    updated: r.updated,
  };
}

export function targetFromRow(r: Selectable<TargetsTable>): Target {
  return {
    id: r.id,
    project: r.project,
    app: r.app,
    node: r.node,
    path: r.path,
    strategy: r.strategy as Target['strategy'],
    include: json(r.include, []),
    exclude: json(r.exclude, []),
    follows: r.follows as Target['follows'],
    pinned: r.pinned,
    on_local_change: r.on_local_change as Target['on_local_change'],
    mode: (r.mode ?? 'full') as TargetMode,
    paused: r.paused_reason == null ? null : { reason: r.paused_reason, by: r.paused_by ?? '', since: r.paused_since!, until: r.paused_until_ms == null ? null : iso(Number(r.paused_until_ms)) },
    current_version: r.current_version,
    last_sync: r.last_sync,
    last_status: r.last_status,
    consecutive_failures: Number(r.consecutive_failures),
    created: r.created,
    updated: r.updated,
  };
}

export function taskFromRow(r: Selectable<TasksTable>): Task {
  return {
    id: r.id,
    target: r.target,
    project: r.project,
    app: r.app,
    node: r.node,
    version: r.version,
    manifest: r.manifest,
    source: r.source,
    state: r.state as TaskState,
    attempts: Number(r.attempts),
    max_attempts: Number(r.max_attempts),
    next_attempt: r.next_attempt_ms == null ? null : iso(Number(r.next_attempt_ms)),
    lease_expires: r.lease_expires_ms == null ? null : iso(Number(r.lease_expires_ms)),
    attempt_id: r.attempt_id,
    stage: r.stage,
    progress: r.progress == null ? null : Number(r.progress),
    result: json(r.result, null),
    error: r.error_code == null ? null : { code: r.error_code, reason: r.error_reason ?? '' },
    log: { count: Number(r.log_count), dropped: Number(r.log_dropped) },
    from_version: r.from_version,
    created: r.created,
    started: r.started,
    finished: r.finished,
    updated: r.updated,
  };
}

function projectFromRow(r: Selectable<FleetProjectsTable>): ProjectSettings {
  return {
    project: r.project,
    max_parallel_nodes: Number(r.max_parallel_nodes),
    retry: { max_attempts: Number(r.retry_max_attempts), base_ms: Number(r.retry_base_ms), max_ms: Number(r.retry_max_ms) },
    offline_policy: r.offline_policy as ProjectSettings['offline_policy'],
    degraded_after: Number(r.degraded_after),
    sync_degraded: Number(r.sync_degraded) === 1,
    degraded_reason: r.degraded_reason,
    degraded_since: r.degraded_since,
  };
}

const notFound = (what: string, id: string) => new KkError('NOT_FOUND', `${what} ${JSON.stringify(id)} does not exist`);

export class Fleet {
  heartbeatIntervalMs: number;
  offlineAfterMs: number;
  leaseMs: number;
  logMax: number;
  verifyTimeoutMs: number;
  private graceUntilMs: number;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly db: Kysely<FleetDatabase>;
  /** Called after a commit that made work claimable (the server's long-polls wait on it). */
  onWork: (nodeIds: string[]) => void = () => {};

  constructor(
    private readonly cdb: ControlDb,
    private readonly events: Events,
    opts: FleetOptions = {},
  ) {
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs ?? 10_000;
    this.offlineAfterMs = opts.offlineAfterMs ?? 50_000;
    this.leaseMs = opts.leaseMs ?? 30_000;
    this.logMax = opts.logMax ?? 2000;
    this.verifyTimeoutMs = opts.verifyTimeoutMs ?? 120_000;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    // After a (re)start, agents get a lease's worth of time to reconnect before anything expires.
    this.graceUntilMs = opts.graceUntilMs ?? this.now() + this.leaseMs;
    this.db = cdb.db as unknown as Kysely<FleetDatabase>;
  }

  /** Change the timings after construction (the server reads them from its config); restarts the grace. */
  configure(opts: Pick<FleetOptions, 'heartbeatIntervalMs' | 'offlineAfterMs' | 'leaseMs' | 'logMax' | 'verifyTimeoutMs'>): void {
    const pos = (v: number | undefined, what: string) => {
      if (v !== undefined && !(Number.isInteger(v) && v > 0)) throw new KkError('CONFIG_INVALID', `${what} must be a positive number of milliseconds`);
      return v;
    };
    this.heartbeatIntervalMs = pos(opts.heartbeatIntervalMs, 'heartbeat interval') ?? this.heartbeatIntervalMs;
    this.offlineAfterMs = pos(opts.offlineAfterMs, 'offline threshold') ?? this.offlineAfterMs;
    this.leaseMs = pos(opts.leaseMs, 'lease') ?? this.leaseMs;
    this.logMax = pos(opts.logMax, 'log lines per task') ?? this.logMax;
    this.verifyTimeoutMs = pos(opts.verifyTimeoutMs, 'verify timeout') ?? this.verifyTimeoutMs;
    this.graceUntilMs = this.now() + this.leaseMs;
  }

  private tx<T>(fn: (tx: FleetExecutor) => Promise<T>): Promise<T> {
    return this.cdb.writeTx((tx) => fn(tx as unknown as FleetExecutor));
  }

  private get locking(): boolean {
    return this.cdb.skipLocked;
  }

  // ---------------------------------------------------------------- registration and node tokens

  /** A registration token: the secret is in `token`, shown once; only its hash is kept. */
  async createRegistrationToken(opts: { name?: string; expiresInMs?: number; tags?: Tags; by: string }): Promise<{ token: string; id: string; expires: string | null }> {
    const id = randomBytes(10).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const now = this.now();
    const expiresMs = opts.expiresInMs == null ? null : now + opts.expiresInMs;
    await this.tx(async (tx) => {
      await tx
        .insertInto('registration_tokens')
        .values({ id, name: opts.name ?? 'registration', hash: sha256hex(secret), created: iso(now), expires: expiresMs == null ? null : iso(expiresMs), expires_ms: expiresMs, revoked: null, created_by: opts.by, tags: JSON.stringify(validateTags(opts.tags)), uses: 0 })
        .execute();
      await this.events.append(tx as unknown as Executor, { type: 'registration_token.created', actor: { token: opts.by }, details: { registration_token: id, expires: expiresMs == null ? null : iso(expiresMs) } });
    });
    return { token: `kkr_${id}_${secret}`, id, expires: expiresMs == null ? null : iso(expiresMs) };
  }

  async listRegistrationTokens() {
    const rows = await this.db.selectFrom('registration_tokens').selectAll().orderBy('created', 'desc').execute();
    return rows.map(({ hash: _h, expires_ms: _e, tags, ...r }) => ({ ...r, tags: json<Tags>(tags, {}), uses: Number(r.uses) }));
  }

  async revokeRegistrationToken(id: string, by: string): Promise<void> {
    await this.tx(async (tx) => {
      const r = await tx.updateTable('registration_tokens').set({ revoked: iso(this.now()) }).where('id', '=', id).where('revoked', 'is', null).executeTakeFirst();
      if (r.numUpdatedRows === 0n && !(await tx.selectFrom('registration_tokens').select('id').where('id', '=', id).executeTakeFirst())) throw notFound('registration token', id);
      await this.events.append(tx as unknown as Executor, { type: 'registration_token.revoked', actor: { token: by }, details: { registration_token: id } });
    });
  }

  /**
   * Enrol an agent: a valid registration token (AUTH otherwise: unknown, expired or revoked)
   * creates the node and its node token, which is returned once. A name already taken is refused.
   */
  async enrol(input: { registrationToken: string; name: string; tags?: Tags; address?: string; info?: Record<string, unknown> }): Promise<{ node: FleetNode; token: string }> {
    const m = REG_RE.exec(input.registrationToken ?? '');
    const invalid = () => new KkError('AUTH', 'the registration token is not valid (unknown, expired or revoked)', { hint: 'create a new one with `kk node token create` on the server' });
    if (!m) throw invalid();
    assertNodeName(input.name);
    const tags = validateTags(input.tags);
    const now = this.now();
    return this.tx(async (tx) => {
      const reg = await tx.selectFrom('registration_tokens').selectAll().where('id', '=', m[1]!).executeTakeFirst();
      if (!reg || !hashMatches(reg.hash, m[2]!) || reg.revoked || (reg.expires_ms != null && Number(reg.expires_ms) <= now)) throw invalid();
      const taken = await tx.selectFrom('nodes').select('id').where('name', '=', input.name).executeTakeFirst();
      if (taken) {
        throw new KkError('CONFIG_INVALID', `a node named ${JSON.stringify(input.name)} already exists (${taken.id})`, { hint: `pick another --name, or remove the old node first: kk node rm ${input.name}` });
      }
      const id = `nd-${timeId(now)}`;
      const row = {
        id,
        name: input.name,
        kind: 'agent',
        address: input.address ?? null,
        tags: JSON.stringify({ ...json<Tags>(reg.tags, {}), ...tags }),
        status: 'ONLINE',
        status_reason: 'enrolled',
        status_since: iso(now),
        last_heartbeat_ms: now,
        info: input.info ? JSON.stringify(input.info) : null,
        schedulable: 1,
        drain_reason: null,
        created: iso(now),
        updated: iso(now),
      };
      await tx.insertInto('nodes').values(row).execute();
      await tx.insertInto('node_status_history').values({ node: id, time: iso(now), from_status: null, to_status: 'ONLINE', reason: 'enrolled' }).execute();
      await tx.updateTable('registration_tokens').set((eb) => ({ uses: eb('uses', '+', 1) })).where('id', '=', reg.id).execute();
      const token = await this.mintNodeToken(tx, id, reg.id);
      await this.events.append(tx as unknown as Executor, { type: 'node.enrolled', actor: { token: `registration:${reg.id}` }, details: { node: id, name: input.name } });
      return { node: nodeFromRow(row), token };
    });
  }

  private async mintNodeToken(tx: FleetExecutor, node: string, registration: string | null): Promise<string> {
    const id = randomBytes(10).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    await tx.updateTable('node_tokens').set({ revoked: iso(this.now()) }).where('node', '=', node).where('revoked', 'is', null).execute();
    await tx.insertInto('node_tokens').values({ id, node, hash: sha256hex(secret), created: iso(this.now()), revoked: null, registration }).execute();
    return `kkn_${id}_${secret}`;
  }

  /** Revoke the node's store tokens but `keep`; delete its ones revoked more than a day ago. */
  async retireStoreTokens(node: string, keep: string): Promise<void> {
    const now = this.now();
    await this.tx(async (tx) => {
      await tx.updateTable('tokens').set({ revoked: iso(now) }).where('created_by', '=', `node:${node}`).where('id', '!=', keep).where('revoked', 'is', null).execute();
      await tx.deleteFrom('tokens').where('created_by', '=', `node:${node}`).where('revoked', '<', iso(now - 86_400_000)).execute();
    });
  }

  /** A new token for a node (the old one stops working at once). */
  async rotateNodeToken(node: string): Promise<string> {
    return this.tx(async (tx) => {
      if (!(await tx.selectFrom('nodes').select('id').where('id', '=', node).executeTakeFirst())) throw notFound('node', node);
      return this.mintNodeToken(tx, node, null);
    });
  }

  /**
   * The node a node token belongs to (AUTH when unknown or revoked). With `node`, FORBIDDEN when
   * the token belongs to another node.
   */
  async authenticateNode(token: string, node?: string): Promise<string> {
    const m = NODE_RE.exec(token ?? '');
    const invalid = () => new KkError('AUTH', 'the node token is not valid (unknown or revoked)', { hint: 'enrol the agent again with a registration token' });
    if (!m) throw invalid();
    const row = await this.db.selectFrom('node_tokens').selectAll().where('id', '=', m[1]!).executeTakeFirst();
    if (!row || row.revoked || !hashMatches(row.hash, m[2]!)) throw invalid();
    if (node !== undefined && row.node !== node) throw new KkError('FORBIDDEN', `this node token belongs to node ${row.node}, not ${node}`, { hint: 'each agent may act only for its own node' });
    return row.node;
  }

  // ---------------------------------------------------------------- nodes

  /** Register nodes (ssh nodes, or agents named ahead of enrolment) in one transaction: all or none. */
  async createNodes(items: { name: string; kind: 'agent' | 'ssh'; address?: string; tags?: Tags }[], by: string): Promise<FleetNode[]> {
    const now = this.now();
    const rows = items.map((it, i) => {
      assertNodeName(it.name);
      if (it.kind !== 'agent' && it.kind !== 'ssh') throw new KkError('CONFIG_INVALID', `node ${it.name}: kind must be agent or ssh`);
      if (it.kind === 'ssh' && !it.address) throw new KkError('CONFIG_INVALID', `node ${it.name}: an ssh node needs an address (user@host[:port])`);
      return {
        id: `nd-${timeId(now)}${i.toString(36)}`,
        name: it.name,
        kind: it.kind,
        address: it.address ?? null,
        tags: JSON.stringify(validateTags(it.tags)),
        status: 'OFFLINE',
        status_reason: it.kind === 'ssh' ? 'not probed yet' : 'no heartbeat yet',
        status_since: iso(now),
        last_heartbeat_ms: null,
        info: null,
        schedulable: 1,
        drain_reason: null,
        created: iso(now),
        updated: iso(now),
      };
    });
    const names = new Set<string>();
    for (const r of rows) {
      if (names.has(r.name)) throw new KkError('CONFIG_INVALID', `node name ${r.name} appears twice in the batch`);
      names.add(r.name);
    }
    await this.tx(async (tx) => {
      if (rows.length) {
        const taken = await tx.selectFrom('nodes').select('name').where('name', 'in', [...names]).execute();
        if (taken.length) throw new KkError('CONFIG_INVALID', `node name(s) already taken: ${taken.map((t) => t.name).join(', ')}`, { hint: 'nothing was imported; rename or remove those first' });
      }
      for (const r of rows) {
        await tx.insertInto('nodes').values(r).execute();
        await tx.insertInto('node_status_history').values({ node: r.id, time: r.created, from_status: null, to_status: r.status, reason: r.status_reason }).execute();
        await this.events.append(tx as unknown as Executor, { type: 'node.created', actor: { token: by }, details: { node: r.id, name: r.name, kind: r.kind } });
      }
    });
    return rows.map(nodeFromRow);
  }

  /** A node by id or name. */
  async node(idOrName: string): Promise<FleetNode> {
    const r = await this.db.selectFrom('nodes').selectAll().where((eb) => eb.or([eb('id', '=', idOrName), eb('name', '=', idOrName)])).executeTakeFirst();
    if (!r) throw notFound('node', idOrName);
    return nodeFromRow(r);
  }

  async nodes(filter: { tags?: Tags; status?: NodeStatus; kind?: string } = {}): Promise<FleetNode[]> {
    let q = this.db.selectFrom('nodes').selectAll().orderBy('name');
    if (filter.status) q = q.where('status', '=', filter.status);
    if (filter.kind) q = q.where('kind', '=', filter.kind);
    const all = (await q.execute()).map(nodeFromRow);
    const want = Object.entries(filter.tags ?? {});
    return all.filter((n) => want.every(([k, v]) => n.tags[k] === v));
  }

  async statusHistory(node: string, limit = 50) {
    const id = (await this.node(node)).id;
    const rows = await this.db.selectFrom('node_status_history').selectAll().where('node', '=', id).orderBy('n', 'desc').limit(limit).execute();
    return rows.map((r) => ({ time: r.time, from: r.from_status, to: r.to_status, reason: r.reason }));
  }

  async updateNode(idOrName: string, patch: { name?: string; address?: string | null; tags?: Tags; schedulable?: boolean; drain_reason?: string | null }, by: string): Promise<FleetNode> {
    const node = await this.node(idOrName);
    if (patch.name !== undefined) assertNodeName(patch.name);
    const set: Partial<NodesTable> = { updated: iso(this.now()) };
    if (patch.name !== undefined) set.name = patch.name;
    if (patch.address !== undefined) set.address = patch.address;
    if (patch.tags !== undefined) set.tags = JSON.stringify(validateTags(patch.tags));
    if (patch.schedulable !== undefined) {
      set.schedulable = patch.schedulable ? 1 : 0;
      set.drain_reason = patch.schedulable ? null : (patch.drain_reason ?? 'drained');
    }
    await this.tx(async (tx) => {
      try {
        await tx.updateTable('nodes').set(set).where('id', '=', node.id).execute();
      } catch (err) {
        if (isUniqueViolation(err)) throw new KkError('CONFIG_INVALID', `a node named ${JSON.stringify(patch.name)} already exists`);
        throw err;
      }
      const type = patch.schedulable === false ? 'node.drained' : patch.schedulable === true ? 'node.undrained' : 'node.updated';
      await this.events.append(tx as unknown as Executor, { type, actor: { token: by }, details: { node: node.id, ...patch } });
    });
    if (patch.schedulable === true) this.onWork([node.id]);
    return this.node(node.id);
  }

  /** Remove a node. CONFIG_INVALID while targets use it, unless `force` (which removes them and their tasks). */
  async removeNode(idOrName: string, opts: { force?: boolean; by: string }): Promise<void> {
    const node = await this.node(idOrName);
    await this.tx(async (tx) => {
      const targets = await tx.selectFrom('targets').select('id').where('node', '=', node.id).execute();
      if (targets.length && !opts.force) {
        throw new KkError('CONFIG_INVALID', `node ${node.name} is used by ${targets.length} target(s): ${targets.slice(0, 5).map((t) => t.id).join(', ')}`, { hint: 'remove those targets first, or pass --force to remove them with the node' });
      }
      if (targets.length) await tx.deleteFrom('targets').where('node', '=', node.id).execute();
      await tx.deleteFrom('nodes').where('id', '=', node.id).execute();
      // Its store (pull) tokens stop working with it.
      await tx.updateTable('tokens').set({ revoked: iso(this.now()) }).where('created_by', '=', `node:${node.id}`).where('revoked', 'is', null).execute();
      await this.events.append(tx as unknown as Executor, { type: 'node.removed', actor: { token: opts.by }, details: { node: node.id, name: node.name, targets: targets.map((t) => t.id) } });
    });
  }

  /**
   * A heartbeat from an agent: the node is ONLINE (DEGRADED when the agent says why), the lease
   * of the attempt it is running is renewed. The answer tells the agent when to come back and
   * whether the task it runs was canceled meanwhile.
   */
  async heartbeat(nodeId: string, hb: { info?: Record<string, unknown>; degraded?: string; task?: { id: string; attempt_id: string } } = {}): Promise<{ interval_ms: number; lease_ms: number; task_current?: boolean }> {
    const now = this.now();
    const out: { interval_ms: number; lease_ms: number; task_current?: boolean } = { interval_ms: this.heartbeatIntervalMs, lease_ms: this.leaseMs };
    await this.tx(async (tx) => {
      const node = await tx.selectFrom('nodes').selectAll().where('id', '=', nodeId).executeTakeFirst();
      if (!node) throw notFound('node', nodeId);
      const set: Partial<NodesTable> = { last_heartbeat_ms: now };
      if (hb.info) set.info = JSON.stringify(hb.info);
      const to: NodeStatus = hb.degraded ? 'DEGRADED' : 'ONLINE';
      const reason = hb.degraded ?? 'heartbeat received';
      if (node.status !== to) {
        await transition(tx, this.events, { entity: 'node', id: nodeId, from: node.status as NodeStatus, to, reason, set }, { by: `node:${nodeId}`, time: iso(now) });
      } else {
        await tx.updateTable('nodes').set({ ...set, ...(to === 'DEGRADED' ? { status_reason: reason } : {}) }).where('id', '=', nodeId).execute();
      }
      if (hb.task) {
        const r = await tx
          .updateTable('tasks')
          .set({ lease_expires_ms: now + this.leaseMs })
          .where('id', '=', hb.task.id)
          .where('node', '=', nodeId)
          .where('attempt_id', '=', hb.task.attempt_id)
          .where('state', '=', 'RUNNING')
          .executeTakeFirst();
        out.task_current = r.numUpdatedRows > 0n;
      }
    });
    return out;
  }

  // ---------------------------------------------------------------- projects

  private async ensureProject(tx: FleetExecutor, project: string): Promise<Selectable<FleetProjectsTable>> {
    const found = await tx.selectFrom('fleet_projects').selectAll().where('project', '=', project).executeTakeFirst();
    if (found) return found;
    const row = {
      project,
      max_parallel_nodes: DEFAULT_MAX_PARALLEL_NODES,
      retry_max_attempts: DEFAULT_TASK_RETRY.maxAttempts,
      retry_base_ms: DEFAULT_TASK_RETRY.baseMs,
      retry_max_ms: DEFAULT_TASK_RETRY.maxMs,
      offline_policy: 'wait',
      degraded_after: DEFAULT_DEGRADED_AFTER,
      sync_degraded: 0,
      degraded_reason: null,
      degraded_since: null,
      updated: iso(this.now()),
    };
    await tx.insertInto('fleet_projects').values(row).onConflict((oc) => oc.column('project').doNothing()).execute();
    await this.resizeSlots(tx, project, DEFAULT_MAX_PARALLEL_NODES);
    return (await tx.selectFrom('fleet_projects').selectAll().where('project', '=', project).executeTakeFirstOrThrow());
  }

  /** Exactly slots 0..n-1 exist, except that a slot a running task still holds stays until it ends. */
  private async resizeSlots(tx: FleetExecutor, project: string, n: number): Promise<void> {
    const have = new Set((await tx.selectFrom('fleet_slots').select('slot').where('project', '=', project).execute()).map((r) => Number(r.slot)));
    for (let s = 0; s < n; s++) if (!have.has(s)) await tx.insertInto('fleet_slots').values({ project, slot: s }).onConflict((oc) => oc.columns(['project', 'slot']).doNothing()).execute();
    await tx
      .deleteFrom('fleet_slots')
      .where('project', '=', project)
      .where('slot', '>=', n)
      .where((eb) => eb.not(eb.exists(eb.selectFrom('tasks').select('tasks.id').whereRef('tasks.project', '=', 'fleet_slots.project').whereRef('tasks.slot', '=', 'fleet_slots.slot').where('tasks.state', '=', 'RUNNING'))))
      .execute();
  }

  async project(project: string): Promise<ProjectSettings> {
    assertProjectName(project);
    const r = await this.db.selectFrom('fleet_projects').selectAll().where('project', '=', project).executeTakeFirst();
    if (r) return projectFromRow(r);
    return projectFromRow({ project, max_parallel_nodes: DEFAULT_MAX_PARALLEL_NODES, retry_max_attempts: DEFAULT_TASK_RETRY.maxAttempts, retry_base_ms: DEFAULT_TASK_RETRY.baseMs, retry_max_ms: DEFAULT_TASK_RETRY.maxMs, offline_policy: 'wait', degraded_after: DEFAULT_DEGRADED_AFTER, sync_degraded: 0, degraded_reason: null, degraded_since: null, updated: '' });
  }

  async setProject(project: string, s: { max_parallel_nodes?: number; retry?: Partial<ProjectSettings['retry']>; offline_policy?: 'wait' | 'skip'; degraded_after?: number }, by: string): Promise<ProjectSettings> {
    assertProjectName(project);
    const int = (v: unknown, lo: number, hi: number, what: string) => {
      if (!Number.isInteger(v) || (v as number) < lo || (v as number) > hi) throw new KkError('CONFIG_INVALID', `${what} must be an integer from ${lo} to ${hi}`);
      return v as number;
    };
    await this.tx(async (tx) => {
      const cur = await this.ensureProject(tx, project);
      const set: Partial<FleetProjectsTable> = { updated: iso(this.now()) };
      if (s.max_parallel_nodes !== undefined) set.max_parallel_nodes = int(s.max_parallel_nodes, 1, 1000, 'max_parallel_nodes');
      if (s.retry?.max_attempts !== undefined) set.retry_max_attempts = int(s.retry.max_attempts, 1, 100, 'retry.max_attempts');
      if (s.retry?.base_ms !== undefined) set.retry_base_ms = int(s.retry.base_ms, 0, 86_400_000, 'retry.base_ms');
      if (s.retry?.max_ms !== undefined) set.retry_max_ms = int(s.retry.max_ms, 0, 86_400_000, 'retry.max_ms');
      if ((set.retry_max_ms ?? Number(cur.retry_max_ms)) < (set.retry_base_ms ?? Number(cur.retry_base_ms))) throw new KkError('CONFIG_INVALID', 'retry.max_ms must be at least retry.base_ms');
      if (s.offline_policy !== undefined) {
        if (s.offline_policy !== 'wait' && s.offline_policy !== 'skip') throw new KkError('CONFIG_INVALID', 'offline_policy must be wait or skip');
        set.offline_policy = s.offline_policy;
      }
      if (s.degraded_after !== undefined) set.degraded_after = int(s.degraded_after, 1, 1000, 'degraded_after');
      await tx.updateTable('fleet_projects').set(set).where('project', '=', project).execute();
      if (set.max_parallel_nodes !== undefined) await this.resizeSlots(tx, project, set.max_parallel_nodes);
      await this.events.append(tx as unknown as Executor, { type: 'project.fleet_settings', project, actor: { token: by }, details: { ...s } });
    });
    this.onWork([]);
    return this.project(project);
  }

  // ---------------------------------------------------------------- targets

  async addTarget(input: {
    project: string;
    app: string;
    node: string;
    path: string;
    strategy?: 'mirror' | 'overlay';
    include?: string[];
    exclude?: string[];
    follows?: 'promoted' | 'latest' | 'pinned';
    pinned?: string;
    on_local_change?: 'overwrite' | 'fail';
    mode?: TargetMode;
    by: string;
  }): Promise<Target> {
    assertProjectName(input.project);
    assertAppName(input.app);
    assertTargetPath(input.path);
    const strategy = input.strategy ?? 'mirror';
    if (strategy !== 'mirror' && strategy !== 'overlay') throw new KkError('CONFIG_INVALID', `strategy must be mirror or overlay, not ${JSON.stringify(strategy)}`);
    const follows = input.follows ?? (input.pinned ? 'pinned' : 'promoted');
    if (!['promoted', 'latest', 'pinned'].includes(follows)) throw new KkError('CONFIG_INVALID', `follows must be promoted, latest or pinned`);
    if ((follows === 'pinned') !== !!input.pinned) throw new KkError('CONFIG_INVALID', follows === 'pinned' ? 'a pinned target needs the version it pins' : 'only a pinned target names a version');
    if (input.pinned) assertVersionSpec(input.pinned);
    const olc = input.on_local_change ?? 'overwrite';
    if (olc !== 'overwrite' && olc !== 'fail') throw new KkError('CONFIG_INVALID', 'on_local_change must be overwrite or fail');
    const mode = targetMode(input.mode);
    const node = await this.node(input.node);
    // An agent started with --allow-root says so in its heartbeats: refuse a path it would refuse.
    const roots = Array.isArray(node.info?.allowed_roots) ? (node.info.allowed_roots as unknown[]).filter((r): r is string => typeof r === 'string') : [];
    if (roots.length && !roots.some((r) => { const root = posix.normalize(r).replace(/\/+$/, '') || '/'; return root === '/' || input.path === root || input.path.startsWith(`${root}/`); })) {
      throw new KkError('UNSAFE_PATH', `${input.path} is outside the directories node ${node.name} allows (${roots.join(', ')})`, { hint: 'pick a path inside them, or restart its agent with another --allow-root' });
    }
    const now = iso(this.now());
    const row = {
      id: `tg-${timeId()}`,
      project: input.project,
      app: input.app,
      node: node.id,
      path: input.path,
      strategy,
      include: JSON.stringify(patterns(input.include, 'include')),
      exclude: JSON.stringify(patterns(input.exclude, 'exclude')),
      follows,
      pinned: input.pinned ?? null,
      on_local_change: olc,
      mode,
      paused_reason: null,
      paused_by: null,
      paused_since: null,
      paused_until_ms: null,
      current_version: null,
      last_sync: null,
      last_status: null,
      consecutive_failures: 0,
      created: now,
      updated: now,
    };
    await this.tx(async (tx) => {
      await this.ensureProject(tx, input.project);
      const clash = await tx.selectFrom('targets').select('id').where('node', '=', node.id).where('path', '=', input.path).executeTakeFirst();
      if (clash) throw new KkError('CONFIG_INVALID', `${input.path} on node ${node.name} already belongs to target ${clash.id}`, { hint: 'one directory per node belongs to one target; pick another path or remove that target' });
      try {
        await tx.insertInto('targets').values(row).execute();
      } catch (err) {
        if (isUniqueViolation(err)) throw new KkError('CONFIG_INVALID', `${input.path} on node ${node.name} already belongs to another target`);
        throw err;
      }
      await this.events.append(tx as unknown as Executor, { type: 'target.created', project: input.project, app: input.app, actor: { token: input.by }, details: { target: row.id, node: node.id, path: input.path } });
    });
    return targetFromRow(row);
  }

  /**
   * Change how a target is synced (strategy, filters, what it follows, on_local_change). The node
   * and path stay: another directory is another target. Unchanged fields may be omitted.
   */
  async updateTarget(id: string, patch: { strategy?: 'mirror' | 'overlay'; include?: string[]; exclude?: string[]; follows?: 'promoted' | 'latest' | 'pinned'; pinned?: string | null; on_local_change?: 'overwrite' | 'fail'; mode?: TargetMode }, by: string): Promise<Target> {
    const t = await this.target(id);
    const strategy = patch.strategy ?? t.strategy;
    if (strategy !== 'mirror' && strategy !== 'overlay') throw new KkError('CONFIG_INVALID', `strategy must be mirror or overlay, not ${JSON.stringify(strategy)}`);
    const pinned = patch.pinned !== undefined ? patch.pinned : patch.follows && patch.follows !== 'pinned' ? null : t.pinned;
    const follows = patch.follows ?? (patch.pinned ? 'pinned' : t.follows);
    if (!['promoted', 'latest', 'pinned'].includes(follows)) throw new KkError('CONFIG_INVALID', 'follows must be promoted, latest or pinned');
    if ((follows === 'pinned') !== !!pinned) throw new KkError('CONFIG_INVALID', follows === 'pinned' ? 'a pinned target needs the version it pins' : 'only a pinned target names a version');
    if (pinned) assertVersionSpec(pinned);
    const olc = patch.on_local_change ?? t.on_local_change;
    if (olc !== 'overwrite' && olc !== 'fail') throw new KkError('CONFIG_INVALID', 'on_local_change must be overwrite or fail');
    const mode = targetMode(patch.mode ?? t.mode);
    const set = {
      strategy,
      include: JSON.stringify(patch.include !== undefined ? patterns(patch.include, 'include') : t.include),
      exclude: JSON.stringify(patch.exclude !== undefined ? patterns(patch.exclude, 'exclude') : t.exclude),
      follows,
      pinned,
      on_local_change: olc,
      mode,
      updated: iso(this.now()),
    };
    await this.tx(async (tx) => {
      await tx.updateTable('targets').set(set).where('id', '=', id).execute();
      await this.events.append(tx as unknown as Executor, { type: 'target.updated', project: t.project, app: t.app, actor: { token: by }, details: { target: id, ...patch } });
    });
    return this.target(id);
  }

  async target(id: string): Promise<Target> {
    const r = await this.db.selectFrom('targets').selectAll().where('id', '=', id).executeTakeFirst();
    if (!r) throw notFound('target', id);
    return targetFromRow(r);
  }

  async targets(filter: { project?: string; app?: string; node?: string } = {}): Promise<Target[]> {
    let q = this.db.selectFrom('targets').selectAll().orderBy('project').orderBy('app').orderBy('created');
    if (filter.project) q = q.where('project', '=', filter.project);
    if (filter.app) q = q.where('app', '=', filter.app);
    if (filter.node) q = q.where('node', '=', (await this.node(filter.node)).id);
    return (await q.execute()).map(targetFromRow);
  }

  async removeTarget(id: string, by: string): Promise<void> {
    const t = await this.target(id);
    await this.tx(async (tx) => {
      await tx.deleteFrom('targets').where('id', '=', id).execute();
      await this.events.append(tx as unknown as Executor, { type: 'target.removed', project: t.project, app: t.app, actor: { token: by }, details: { target: id } });
    });
  }

  /** Pause: nothing is applied on the target until it is resumed (or `untilMs` passes). */
  async pause(id: string, p: { reason: string; by: string; untilMs?: number }): Promise<Target> {
    if (typeof p.reason !== 'string' || !p.reason.trim()) throw new KkError('CONFIG_INVALID', 'a pause needs a reason', { hint: 'say why, e.g. --reason "upgrading node 2"' });
    const t = await this.target(id);
    if (t.paused) throw new KkError('LOCKED', `target ${id} is already paused by ${t.paused.by} since ${t.paused.since}: ${t.paused.reason}`, { hint: 'resume it first to pause it with another reason' });
    const now = this.now();
    await this.tx((tx) =>
      transition(
        tx,
        this.events,
        { entity: 'target', id, from: 'running', to: 'paused', set: { paused_reason: p.reason.trim(), paused_by: p.by, paused_since: iso(now), paused_until_ms: p.untilMs ?? null } },
        { by: p.by, project: t.project, app: t.app, details: { reason: p.reason.trim(), until: p.untilMs ? iso(p.untilMs) : null } },
      ),
    );
    return this.target(id);
  }

  async resume(id: string, by: string): Promise<Target> {
    const t = await this.target(id);
    if (!t.paused) return t;
    await this.tx((tx) => this.resumeIn(tx, t, by, 'resumed'));
    this.onWork([t.node]);
    return this.target(id);
  }

  private resumeIn(tx: FleetExecutor, t: Target, by: string, why: string) {
    return transition(
      tx,
      this.events,
      { entity: 'target', id: t.id, from: 'paused', to: 'running', set: { paused_reason: null, paused_by: null, paused_since: null, paused_until_ms: null } },
      { by, project: t.project, app: t.app, details: { why, was: t.paused } },
    );
  }

  /** Running or paused (by whom, since), the last sync and the last 10 syncs. */
  async targetStatus(id: string): Promise<{ target: Target; state: 'running' | 'paused'; history: HistoryEntry[]; queued: Task | null; running: Task | null; verify: VerifyStatus | null }> {
    const target = await this.target(id);
    const v = await this.db.selectFrom('tasks').selectAll().where('target', '=', id).where('source', '=', 'verify').orderBy('created_ms', 'desc').orderBy('id', 'desc').limit(1).executeTakeFirst();
    const verify: VerifyStatus | null = v
      ? {
          task: v.id,
          version: v.version,
          state: v.state === 'SUCCESS' ? 'OK' : v.state === 'FAILED' || (v.state === 'CANCELED' && v.error_code === 'VERIFY_TIMEOUT') ? 'CONFLICT' : v.state === 'CANCELED' ? 'CANCELED' : 'RUNNING',
          time: v.finished ?? v.created,
          error: v.error_code ? { code: v.error_code, reason: v.error_reason ?? '' } : null,
        }
      : null;
    const hist = await this.db.selectFrom('sync_history').selectAll().where('target', '=', id).orderBy('n', 'desc').limit(10).execute();
    const live = await this.db.selectFrom('tasks').selectAll().where('target', '=', id).where('state', 'in', ['PENDING', 'RETRYING', 'RUNNING']).execute();
    return {
      target,
      state: target.paused ? 'paused' : 'running',
      history: hist.map((h) => ({
        task: h.task,
        node: h.node,
        source: h.source,
        from_version: h.from_version,
        to_version: h.to_version,
        files: { added: h.files_added, changed: h.files_changed, deleted: h.files_deleted },
        bytes: h.bytes == null ? null : Number(h.bytes),
        duration_ms: h.duration_ms == null ? null : Number(h.duration_ms),
        status: h.status,
        error: h.error_code ? { code: h.error_code, reason: h.error_reason ?? '' } : null,
        time: h.time,
      })),
      queued: live.filter((t) => t.state !== 'RUNNING').map(taskFromRow)[0] ?? null,
      running: live.filter((t) => t.state === 'RUNNING').map(taskFromRow)[0] ?? null,
      verify,
    };
  }

  // ---------------------------------------------------------------- tasks: creation

  /**
   * Queue `version` for a target. Latest wins: a queued task for another version is canceled
   * (SUPERSEDED) and replaced; the same version already queued or running is returned as is.
   */
  async enqueue(targetId: string, v: { version: string; manifest?: string; source: string; by: string }): Promise<Task> {
    assertVersionSpec(v.version);
    const task = await this.tx((tx) => this.enqueueIn(tx, targetId, v));
    this.onWork([task.node]);
    return task;
  }

  private async enqueueIn(tx: FleetExecutor, targetId: string, v: { version: string; manifest?: string; source: string; by: string }): Promise<Task> {
    const target = await tx.selectFrom('targets').selectAll().where('id', '=', targetId).executeTakeFirst();
    if (!target) throw notFound('target', targetId);
    const now = this.now();
    const live = await tx.selectFrom('tasks').selectAll().where('target', '=', targetId).where('state', 'in', ['PENDING', 'RETRYING', 'RUNNING']).execute();
    const same = live.find((t) => t.version === v.version && (t.manifest ?? null) === (v.manifest ?? t.manifest ?? null) && (t.source === 'verify') === (v.source === 'verify'));
    if (same) {
      // A resume that finds its version already queued makes that task the resume's sync (a verify follows it).
      if (v.source === 'resume' && same.source !== 'resume') {
        await tx.updateTable('tasks').set({ source: 'resume' }).where('id', '=', same.id).execute();
        return taskFromRow({ ...same, source: 'resume' });
      }
      return taskFromRow(same);
    }
    const ctx = { by: v.by, project: target.project, app: target.app, time: iso(now) };
    for (const q of live.filter((t) => t.state !== 'RUNNING')) {
      await transition(
        tx,
        this.events,
        { entity: 'task', id: q.id, from: q.state as TaskState, to: 'CANCELED', set: { next_attempt_ms: null, error_code: 'SUPERSEDED', error_reason: `superseded by version ${v.version} (${v.source})`, finished: iso(now) } },
        { ...ctx, version: q.version, details: { target: targetId, superseded_by: v.version } },
      );
    }
    const proj = await this.ensureProject(tx, target.project);
    const row = {
      id: `tk-${timeId(now)}`,
      target: targetId,
      project: target.project,
      app: target.app,
      node: target.node,
      version: v.version,
      manifest: v.manifest ?? null,
      source: v.source,
      state: 'PENDING',
      attempts: 0,
      max_attempts: Number(proj.retry_max_attempts),
      next_attempt_ms: now,
      lease_expires_ms: null,
      attempt_id: null,
      slot: null,
      stage: null,
      progress: null,
      result: null,
      error_code: null,
      error_reason: null,
      log_count: 0,
      log_dropped: 0,
      created: iso(now),
      created_ms: now,
      started: null,
      finished: null,
      updated: iso(now),
      from_version: target.current_version,
    };
    await tx.insertInto('tasks').values(row).execute();
    await this.events.append(tx as unknown as Executor, { type: 'task.created', project: target.project, app: target.app, version: v.version, actor: { token: v.by }, time: iso(now), details: { task: row.id, target: targetId, node: target.node, source: v.source } });
    return taskFromRow(row);
  }

  /**
   * What a target follows changed (a promote moved `promoted`, a push moved `latest`, a pinned
   * target was repinned): queue it for every target of (project, app) that follows it.
   */
  async versionChanged(e: { project: string; app: string; follows: 'promoted' | 'latest'; version: string; manifest?: string; source: string; by: string }): Promise<Task[]> {
    const targets = await this.db.selectFrom('targets').select('id').where('project', '=', e.project).where('app', '=', e.app).where('follows', '=', e.follows).orderBy('created').execute();
    const out: Task[] = [];
    await this.tx(async (tx) => {
      for (const t of targets) out.push(await this.enqueueIn(tx, t.id, e));
    });
    this.onWork([...new Set(out.map((t) => t.node))]);
    return out;
  }

  // ---------------------------------------------------------------- tasks: claims and reports

  /**
   * The next task of `node`, claimed: PENDING or RETRYING and due, target not paused, the node
   * schedulable and idle, and a free slot of the project. Undefined when there is none. Under
   * PostgreSQL two claimers may race into a constraint; the loser tries again.
   */
  async claim(nodeId: string): Promise<Claim | undefined> {
    for (let i = 0; ; i++) {
      try {
        return await this.tx((tx) => this.claimIn(tx, nodeId));
      } catch (err) {
        if (!isUniqueViolation(err) || i >= 8) throw err;
      }
    }
  }

  private async claimIn(tx: FleetExecutor, nodeId: string): Promise<Claim | undefined> {
    const now = this.now();
    const node = await tx.selectFrom('nodes').select(['id', 'schedulable']).where('id', '=', nodeId).executeTakeFirst();
    if (!node) throw notFound('node', nodeId);
    if (Number(node.schedulable) !== 1) return undefined;
    if (await tx.selectFrom('tasks').select('id').where('node', '=', nodeId).where('state', '=', 'RUNNING').executeTakeFirst()) return undefined;
    let cq = tx.selectFrom('tasks').selectAll().where('node', '=', nodeId).where('next_attempt_ms', '<=', now).orderBy('next_attempt_ms').orderBy('created_ms').limit(20);
    if (this.locking) cq = cq.forUpdate().skipLocked();
    for (const c of await cq.execute()) {
      const target = await tx.selectFrom('targets').selectAll().where('id', '=', c.target).executeTakeFirstOrThrow();
      if (target.paused_reason != null && (target.paused_until_ms == null || Number(target.paused_until_ms) > now)) continue;
      const proj = await this.ensureProject(tx, c.project);
      let sq = tx
        .selectFrom('fleet_slots')
        .select('slot')
        .where('project', '=', c.project)
        .where('slot', '<', Number(proj.max_parallel_nodes))
        .where((eb) => eb.not(eb.exists(eb.selectFrom('tasks').select('tasks.id').whereRef('tasks.project', '=', 'fleet_slots.project').whereRef('tasks.slot', '=', 'fleet_slots.slot').where('tasks.state', '=', 'RUNNING'))))
        .orderBy('slot')
        .limit(1);
      if (this.locking) sq = sq.forUpdate().skipLocked();
      const slot = await sq.executeTakeFirst();
      if (!slot) continue;
      const attempt_id = `at-${randomBytes(8).toString('hex')}`;
      const attempts = Number(c.attempts) + 1;
      const ok = await transition(
        tx,
        this.events,
        {
          entity: 'task',
          id: c.id,
          from: c.state as TaskState,
          to: 'RUNNING',
          set: { attempts, attempt_id, slot: Number(slot.slot), lease_expires_ms: now + this.leaseMs, next_attempt_ms: null, started: c.started ?? iso(now), stage: 'claimed', progress: 0 },
        },
        { by: `node:${nodeId}`, project: c.project, app: c.app, version: c.version, time: iso(now), details: { target: c.target, node: nodeId, attempt: attempts, attempt_id } },
      );
      if (!ok) continue;
      const row = await tx.selectFrom('tasks').selectAll().where('id', '=', c.id).executeTakeFirstOrThrow();
      return { task: taskFromRow(row), target: targetFromRow(target), attempt_id, lease_ms: this.leaseMs };
    }
    return undefined;
  }

  /**
   * A report from the agent running attempt `attemptId`: stage, progress, log lines, and at the
   * end the outcome. Renews the lease. Refused (LOCKED) when the attempt is no longer the task's
   * current one, FORBIDDEN when the task is another node's.
   */
  async report(nodeId: string, taskId: string, attemptId: string, r: { stage?: string; progress?: number; logs?: LogLine[]; outcome?: TaskOutcome }): Promise<Task> {
    const out = await this.tx(async (tx) => {
      const now = this.now();
      const t = await tx.selectFrom('tasks').selectAll().where('id', '=', taskId).executeTakeFirst();
      if (!t) throw notFound('task', taskId);
      if (t.node !== nodeId) throw new KkError('FORBIDDEN', `task ${taskId} belongs to node ${t.node}, not ${nodeId}`);
      if (t.state !== 'RUNNING' || t.attempt_id !== attemptId) {
        throw new KkError('LOCKED', `attempt ${attemptId} of task ${taskId} is no longer current (the task is ${t.state}${t.attempt_id && t.attempt_id !== attemptId ? `, attempt ${t.attempt_id} replaced it` : ''}); the report was refused`, {
          hint: t.state === 'CANCELED' ? 'the task was canceled: abandon it' : 'stop this attempt; the server has already given the task to another attempt or finished it',
          details: { reason: 'stale_attempt', task: taskId, state: t.state, attempt_id: t.attempt_id },
        });
      }
      if (r.logs?.length) await this.appendLogs(tx, t, r.logs, now);
      const set: Partial<TasksTable> = { lease_expires_ms: now + this.leaseMs, updated: iso(now) };
      if (r.stage !== undefined) set.stage = String(r.stage).slice(0, 100);
      if (r.progress !== undefined && Number.isFinite(r.progress)) set.progress = Math.max(0, Math.min(1, r.progress));
      await tx.updateTable('tasks').set(set).where('id', '=', taskId).execute();
      if (r.outcome) await this.finishAttempt(tx, { ...t, ...set }, r.outcome, now, `node:${nodeId}`);
      return taskFromRow(await tx.selectFrom('tasks').selectAll().where('id', '=', taskId).executeTakeFirstOrThrow());
    });
    if (r.outcome) this.onWork([nodeId]);
    return out;
  }

  private async appendLogs(tx: FleetExecutor, t: Pick<Selectable<TasksTable>, 'id' | 'log_count' | 'log_dropped'>, logs: LogLine[], now: number): Promise<void> {
    let count = Number(t.log_count);
    let dropped = Number(t.log_dropped);
    for (const l of logs) {
      if (count >= this.logMax) {
        dropped++;
        continue;
      }
      count++;
      const level = l.level === 'warn' || l.level === 'error' ? l.level : 'info';
      await tx.insertInto('task_logs').values({ task: t.id, n: count, time: l.time ?? iso(now), level, line: String(l.line).slice(0, 4000) }).execute();
    }
    await tx.updateTable('tasks').set({ log_count: count, log_dropped: dropped }).where('id', '=', t.id).execute();
  }

  /** End the current attempt: SUCCESS, or a failure that is retried (RETRYING with backoff) or final (FAILED). */
  private async finishAttempt(tx: FleetExecutor, t: Selectable<TasksTable>, o: TaskOutcome, now: number, by: string): Promise<void> {
    const target = await tx.selectFrom('targets').selectAll().where('id', '=', t.target).executeTakeFirstOrThrow();
    const proj = await this.ensureProject(tx, t.project);
    const ctx = { by, project: t.project, app: t.app, version: t.version, time: iso(now) };
    const result = o.result ? JSON.stringify(o.result) : null;
    const release = { slot: null, lease_expires_ms: null } as const;
    if (o.ok) {
      await transition(tx, this.events, { entity: 'task', id: t.id, from: 'RUNNING', to: 'SUCCESS', set: { ...release, result, finished: iso(now), stage: 'done', progress: 1 } }, { ...ctx, details: { target: t.target, node: t.node, attempt: Number(t.attempts), result: o.result } });
      await tx.updateTable('targets').set({ current_version: t.version, last_sync: iso(now), last_status: 'SUCCESS', consecutive_failures: 0, updated: iso(now) }).where('id', '=', t.target).execute();
      await this.history(tx, t, 'SUCCESS', o.result, null, now);
      if (t.source === 'verify') {
        await this.events.append(tx as unknown as Executor, { type: 'sync.verified', ...ctx, actor: { token: by }, details: { target: t.target, node: t.node, path: target.path, task: t.id, files_checked: o.result?.files_checked ?? null } });
      } else if (t.source === 'resume') {
        // Seed 002: after a resume, one sync, then a verify that the node holds exactly the version.
        const newer = await tx.selectFrom('tasks').select('id').where('target', '=', t.target).where('state', 'in', ['PENDING', 'RETRYING']).executeTakeFirst();
        if (!newer) await this.enqueueIn(tx, t.target, { version: t.version, ...(t.manifest ? { manifest: t.manifest } : {}), source: 'verify', by: 'system' });
      }
      if (Number(target.consecutive_failures) > 0) {
        await this.events.append(tx as unknown as Executor, { type: 'sync.target_recovered', ...ctx, actor: { token: by }, details: { target: t.target, node: t.node, after_failures: Number(target.consecutive_failures) } });
      }
      if (Number(proj.sync_degraded) === 1) {
        const still = await tx.selectFrom('targets').select('id').where('project', '=', t.project).where('consecutive_failures', '>=', Number(proj.degraded_after)).executeTakeFirst();
        if (!still) await transition(tx, this.events, { entity: 'project', id: t.project, from: 'SYNC_DEGRADED', to: 'OK', set: { degraded_reason: null, degraded_since: null } }, { ...ctx, details: { recovered_by: t.id } });
      }
    } else {
      const code = String(o.code || 'UNKNOWN').slice(0, 64);
      const reason = String(o.reason || 'no reason given').slice(0, 2000);
      const attempts = Number(t.attempts);
      const retry = (o.retryable ?? isRetryable(code)) && attempts < Number(t.max_attempts);
      await this.appendLogs(tx, (await tx.selectFrom('tasks').select(['id', 'log_count', 'log_dropped']).where('id', '=', t.id).executeTakeFirstOrThrow()), [{ level: 'error', line: `attempt ${attempts} failed: ${code}: ${reason}${retry ? '' : ' (final)'}` }], now);
      if (retry) {
        const delay = taskBackoffMs(attempts, { baseMs: Number(proj.retry_base_ms), maxMs: Number(proj.retry_max_ms) }, this.random);
        await transition(tx, this.events, { entity: 'task', id: t.id, from: 'RUNNING', to: 'RETRYING', set: { ...release, result, next_attempt_ms: now + delay, error_code: code, error_reason: reason } }, { ...ctx, details: { target: t.target, node: t.node, attempt: attempts, code, reason, retry_in_ms: delay } });
      } else {
        await transition(tx, this.events, { entity: 'task', id: t.id, from: 'RUNNING', to: 'FAILED', set: { ...release, result, finished: iso(now), error_code: code, error_reason: reason } }, { ...ctx, details: { target: t.target, node: t.node, attempt: attempts, code, reason } });
        await this.history(tx, t, 'FAILED', o.result, { code, reason }, now);
        if (t.source === 'verify') await this.conflict(tx, targetFromRow(target), t, code, reason, now, o.result);
      }
      const failures = Number(target.consecutive_failures) + 1;
      await tx.updateTable('targets').set({ last_status: retry ? 'RETRYING' : 'FAILED', consecutive_failures: failures, updated: iso(now) }).where('id', '=', t.target).execute();
      if (failures >= Number(proj.degraded_after) && Number(proj.sync_degraded) === 0) {
        const why = `target ${t.target} (node ${t.node}, ${target.path}) failed ${failures} times in a row: ${code}: ${reason}`;
        await transition(tx, this.events, { entity: 'project', id: t.project, from: 'OK', to: 'SYNC_DEGRADED', set: { degraded_reason: why, degraded_since: iso(now) } }, { ...ctx, details: { target: t.target, reason: why } });
      }
    }
    await this.resizeSlots(tx, t.project, Number(proj.max_parallel_nodes));
  }

  /**
   * A verify that failed for good (CONFLICT: a file differs; VERIFY_TIMEOUT; or whatever stopped
   * it): the alarm event (webhook type sync.conflict) and the target paused again until a person
   * looks (DESIGN 13).
   */
  private async conflict(tx: FleetExecutor, target: Target, t: Selectable<TasksTable>, code: string, reason: string, now: number, result?: TaskResult): Promise<void> {
    const why = `CONFLICT: verify of ${t.version} on node ${t.node} (${target.path}) failed: ${code}: ${reason}`.slice(0, 2000);
    await this.events.append(tx as unknown as Executor, {
      type: 'sync.conflict',
      project: t.project,
      app: t.app,
      version: t.version,
      time: iso(now),
      actor: { token: 'system' },
      details: { target: t.target, node: t.node, path: target.path, task: t.id, code, reason, ...(Array.isArray(result?.problems) ? { problems: (result!.problems as unknown[]).slice(0, 20) } : {}) },
    });
    if (!target.paused) {
      await transition(
        tx,
        this.events,
        { entity: 'target', id: t.target, from: 'running', to: 'paused', set: { paused_reason: why, paused_by: 'system', paused_since: iso(now), paused_until_ms: null } },
        { by: 'system', project: t.project, app: t.app, time: iso(now), details: { reason: why, until: null, conflict: t.id } },
      );
    }
  }

  /** Queue a verify of what the target holds now (on demand; a resume queues one by itself). */
  async verify(targetId: string, by: string): Promise<Task> {
    const t = await this.target(targetId);
    if (!t.current_version) throw new KkError('NOT_FOUND', `target ${targetId} holds no version yet: nothing to verify`, { hint: 'sync it first (kk sync --target ...)' });
    if (t.paused) throw new KkError('PAUSED', `target ${targetId} is paused by ${t.paused.by} since ${t.paused.since}: ${t.paused.reason}`, { hint: 'resume it: a resume syncs and then verifies' });
    const task = await this.tx((tx) => this.enqueueIn(tx, targetId, { version: t.current_version!, source: 'verify', by }));
    this.onWork([task.node]);
    return task;
  }

  /**
   * A pull was recorded by `token`: when that is a node's store token and the node has a paused
   * target of (project, app), raise the alarm (seed 002: nothing may apply while paused).
   */
  async pullObserved(e: { project: string; app: string; version?: string; token: string; agent?: string; seq?: number }): Promise<number> {
    const tok = await this.db.selectFrom('tokens').select('created_by').where('id', '=', e.token).executeTakeFirst();
    const m = /^node:(.+)$/.exec(tok?.created_by ?? '');
    if (!m) return 0;
    const paused = await this.db.selectFrom('targets').selectAll().where('node', '=', m[1]!).where('project', '=', e.project).where('app', '=', e.app).where('paused_reason', 'is not', null).execute();
    if (!paused.length) return 0;
    await this.tx(async (tx) => {
      for (const t of paused) {
        await this.events.append(tx as unknown as Executor, {
          type: 'sync.paused_pull',
          project: e.project,
          app: e.app,
          ...(e.version ? { version: e.version } : {}),
          actor: { token: e.token, ...(e.agent ? { agent: e.agent } : {}) },
          details: { target: t.id, node: t.node, path: t.path, paused_by: t.paused_by, paused_reason: t.paused_reason, pull_event: e.seq ?? null, reason: `a pull of ${e.project}/${e.app} ${e.version ?? ''} by node ${t.node} while target ${t.id} is paused` },
        });
      }
    });
    return paused.length;
  }

  private async history(tx: FleetExecutor, t: Selectable<TasksTable>, status: string, r: TaskResult | undefined, err: { code: string; reason: string } | null, now: number) {
    const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
    await tx
      .insertInto('sync_history')
      .values({
        target: t.target,
        task: t.id,
        node: t.node,
        project: t.project,
        app: t.app,
        source: t.source,
        from_version: t.from_version,
        to_version: t.version,
        files_added: num(r?.files_added),
        files_changed: num(r?.files_changed),
        files_deleted: num(r?.files_deleted),
        bytes: num(r?.bytes_fetched),
        duration_ms: t.started ? now - Date.parse(t.started) : null,
        status,
        error_code: err?.code ?? null,
        error_reason: err?.reason ?? null,
        time: iso(now),
      })
      .execute();
  }

  // ---------------------------------------------------------------- tasks: people

  async task(id: string, opts: { logLimit?: number } = {}): Promise<Task & { logs: { n: number; time: string; level: string; line: string }[] }> {
    const r = await this.db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
    if (!r) throw notFound('task', id);
    const logs = await this.db.selectFrom('task_logs').select(['n', 'time', 'level', 'line']).where('task', '=', id).orderBy('n').limit(opts.logLimit ?? this.logMax).execute();
    return { ...taskFromRow(r), logs: logs.map((l) => ({ ...l, n: Number(l.n) })) };
  }

  /** Newest first, cursor paged (the cursor is opaque: pass `next` back). */
  async tasks(filter: { project?: string; app?: string; node?: string; target?: string; state?: TaskState } = {}, page: { cursor?: string; limit?: number } = {}): Promise<{ items: Task[]; next: string | null }> {
    const limit = Math.min(500, Math.max(1, page.limit ?? 50));
    let q = this.db.selectFrom('tasks').selectAll();
    if (filter.project) q = q.where('project', '=', filter.project);
    if (filter.app) q = q.where('app', '=', filter.app);
    if (filter.node) q = q.where('node', '=', filter.node);
    if (filter.target) q = q.where('target', '=', filter.target);
    if (filter.state) q = q.where('state', '=', filter.state);
    if (page.cursor) {
      const m = /^(\d+)\|(.+)$/.exec(Buffer.from(page.cursor, 'base64url').toString());
      if (!m) throw new KkError('CONFIG_INVALID', 'bad cursor', { hint: 'pass back the `next` value of the previous page' });
      const ms = Number(m[1]);
      q = q.where((eb) => eb.or([eb('created_ms', '<', ms), eb.and([eb('created_ms', '=', ms), eb('id', '<', m[2]!)])]));
    }
    const rows = await q.orderBy('created_ms', 'desc').orderBy('id', 'desc').limit(limit + 1).execute();
    const items = rows.slice(0, limit).map(taskFromRow);
    const last = rows.length > limit ? rows[limit - 1]! : undefined;
    return { items, next: last ? Buffer.from(`${Number(last.created_ms)}|${last.id}`).toString('base64url') : null };
  }

  /** Cancel a queued or running task (a running attempt learns it from its next report). */
  async cancel(id: string, by: string, reason = 'canceled by a person'): Promise<Task> {
    const t = await this.db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
    if (!t) throw notFound('task', id);
    if (!['PENDING', 'RETRYING', 'RUNNING'].includes(t.state)) throw new KkError('CONFIG_INVALID', `task ${id} is ${t.state}: only a pending, retrying or running task can be canceled`);
    const now = this.now();
    await this.tx(async (tx) => {
      const ok = await transition(
        tx,
        this.events,
        { entity: 'task', id, from: t.state as TaskState, to: 'CANCELED', set: { slot: null, lease_expires_ms: null, next_attempt_ms: null, finished: iso(now), error_code: 'CANCELED', error_reason: `${reason} (${by})` } },
        { by, project: t.project, app: t.app, version: t.version, time: iso(now), details: { target: t.target, node: t.node } },
      );
      if (!ok) throw new KkError('LOCKED', `task ${id} changed state meanwhile; look at it again`);
      await this.history(tx, t, 'CANCELED', undefined, { code: 'CANCELED', reason }, now);
      await this.resizeSlots(tx, t.project, Number((await this.ensureProject(tx, t.project)).max_parallel_nodes));
    });
    return taskFromRow((await this.db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirstOrThrow()));
  }

  /** Run a FAILED or CANCELED task again from attempt 1 (LOCKED when the target has another queued task). */
  async retry(id: string, by: string): Promise<Task> {
    const t = await this.db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
    if (!t) throw notFound('task', id);
    if (t.state !== 'FAILED' && t.state !== 'CANCELED') throw new KkError('CONFIG_INVALID', `task ${id} is ${t.state}: only a failed or canceled task can be retried`);
    const now = this.now();
    try {
      await this.tx((tx) =>
        transition(tx, this.events, { entity: 'task', id, from: t.state as TaskState, to: 'PENDING', set: { attempts: 0, next_attempt_ms: now, finished: null, source: 'retry' } }, { by, project: t.project, app: t.app, version: t.version, time: iso(now), details: { target: t.target, node: t.node } }),
      );
    } catch (err) {
      if (isUniqueViolation(err)) throw new KkError('LOCKED', `target ${t.target} already has a queued task; it runs instead`, { hint: 'cancel that one first to retry this version' });
      throw err;
    }
    this.onWork([t.node]);
    return taskFromRow((await this.db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirstOrThrow()));
  }

  // ---------------------------------------------------------------- the sweep

  /**
   * Periodic work (every few seconds on one instance or all: each step is a guarded transition):
   * expired leases become retries, silent agents OFFLINE, lapsed pauses resume, and tasks of
   * offline nodes are skipped where the project says so.
   */
  async sweep(): Promise<{ expired: number; offline: number; resumed: number; skipped: number }> {
    const now = this.now();
    const out = { expired: 0, offline: 0, resumed: 0, skipped: 0 };
    if (now >= this.graceUntilMs) {
      const expired = await this.db.selectFrom('tasks').selectAll().where('state', '=', 'RUNNING').where('lease_expires_ms', '<', now).limit(500).execute();
      for (const t of expired) {
        const done = await this.tx(async (tx) => {
          const cur = await tx.selectFrom('tasks').selectAll().where('id', '=', t.id).executeTakeFirst();
          if (!cur || cur.state !== 'RUNNING' || cur.attempt_id !== t.attempt_id || Number(cur.lease_expires_ms) >= now) return false;
          const node = await tx.selectFrom('nodes').select('name').where('id', '=', t.node).executeTakeFirst();
          await this.finishAttempt(tx, cur, { ok: false, code: 'LEASE_EXPIRED', reason: `node ${node?.name ?? t.node} stopped reporting on attempt ${cur.attempt_id} (lease expired at ${iso(Number(cur.lease_expires_ms))})`, retryable: true }, now, 'system');
          return true;
        });
        if (done) out.expired++;
      }
      const late = await this.db
        .selectFrom('tasks')
        .selectAll()
        .where('source', '=', 'verify')
        .where('state', 'in', ['PENDING', 'RETRYING', 'RUNNING'])
        .where('created_ms', '<', now - this.verifyTimeoutMs)
        .limit(500)
        .execute();
      for (const t of late) {
        const done = await this.tx(async (tx) => {
          const reason = `the verify did not finish within ${Math.round(this.verifyTimeoutMs / 1000)} s (the task was ${t.state})`;
          const moved = await transition(
            tx,
            this.events,
            { entity: 'task', id: t.id, from: t.state as TaskState, to: 'CANCELED', set: { slot: null, lease_expires_ms: null, next_attempt_ms: null, finished: iso(now), error_code: 'VERIFY_TIMEOUT', error_reason: reason } },
            { by: 'system', project: t.project, app: t.app, version: t.version, time: iso(now), details: { target: t.target, node: t.node } },
          );
          if (!moved) return false;
          await this.history(tx, t, 'CANCELED', undefined, { code: 'VERIFY_TIMEOUT', reason }, now);
          const target = await tx.selectFrom('targets').selectAll().where('id', '=', t.target).executeTakeFirstOrThrow();
          await this.conflict(tx, targetFromRow(target), t, 'VERIFY_TIMEOUT', reason, now);
          await this.resizeSlots(tx, t.project, Number((await this.ensureProject(tx, t.project)).max_parallel_nodes));
          return true;
        });
        if (done) out.expired++;
      }
      const silent = await this.db.selectFrom('nodes').selectAll().where('kind', '=', 'agent').where('status', '!=', 'OFFLINE').where('last_heartbeat_ms', '<', now - this.offlineAfterMs).execute();
      for (const n of silent) {
        const ok = await this.tx((tx) =>
          transition(tx, this.events, { entity: 'node', id: n.id, from: n.status as NodeStatus, to: 'OFFLINE', reason: `no heartbeat for ${Math.round((now - Number(n.last_heartbeat_ms)) / 1000)} s (last at ${iso(Number(n.last_heartbeat_ms))})` }, { by: 'system', time: iso(now) }),
        );
        if (ok) out.offline++;
      }
    }
    const lapsed = await this.db.selectFrom('targets').selectAll().where('paused_until_ms', '<=', now).execute();
    for (const t of lapsed) {
      if (await this.tx((tx) => this.resumeIn(tx, targetFromRow(t), 'system', 'the pause expired'))) out.resumed++;
    }
    const skip = await this.db
      .selectFrom('tasks')
      .innerJoin('nodes', 'nodes.id', 'tasks.node')
      .innerJoin('fleet_projects', 'fleet_projects.project', 'tasks.project')
      .selectAll('tasks')
      .select('nodes.name as node_name')
      .where('tasks.state', 'in', ['PENDING', 'RETRYING'])
      .where('nodes.status', '=', 'OFFLINE')
      .where('fleet_projects.offline_policy', '=', 'skip')
      .execute();
    for (const t of skip) {
      const ok = await this.tx(async (tx) => {
        const moved = await transition(
          tx,
          this.events,
          { entity: 'task', id: t.id, from: t.state as TaskState, to: 'CANCELED', set: { next_attempt_ms: null, finished: iso(now), error_code: 'NODE_OFFLINE', error_reason: `node ${t.node_name} is offline and project ${t.project} skips offline nodes` } },
          { by: 'system', project: t.project, app: t.app, version: t.version, time: iso(now), details: { target: t.target, node: t.node } },
        );
        if (moved) await this.history(tx, t, 'CANCELED', undefined, { code: 'NODE_OFFLINE', reason: `node ${t.node_name} is offline` }, now);
        return moved;
      });
      if (ok) out.skipped++;
    }
    if (out.expired || out.resumed) this.onWork([]);
    return out;
  }
}
