// Deploy records (seed deploy-19..25, 31, 33): create one (one active per node, enforced by the
// database; Idempotency-Key honoured), apply the agent's status reports and its final callback
// through the state machine, keep bounded logs, mark a failed version bad for its target, queue
// the signed callback in the webhook outbox, and time out deploys whose node stays silent.
import { createHash, randomBytes } from 'node:crypto';
import { KkError } from '@kk/core';
import type { Kysely, Selectable } from 'kysely';
import type { ControlDb, Executor } from '../db.js';
import type { Events } from '../events.js';
import { timeId } from '../util.js';
import { HIDDEN_WEBHOOK_PREFIX, type Webhooks } from '../webhooks.js';
import { DEPLOY_STATUSES, type DeployStatus, type DeployType, FINAL_STATUSES, deployAllowed, transitionDeploy, type DeployExecutor } from './machine.js';
import type { DeploysDatabase, DeploysTable } from './schema.js';

/** Log lines kept per deploy (the newest). */
export const DEPLOY_LOG_MAX = 1000;

export interface DeployRecord {
  id: string;
  node: string;
  target: string;
  deploy_type: DeployType;
  command_type: string;
  status: DeployStatus;
  active: boolean;
  progress: number;
  stage: string;
  message: string;
  spec: Record<string, unknown>;
  version?: string;
  rollback_of?: string;
  result?: Record<string, unknown>;
  error?: string;
  error_code?: string;
  callback_url?: string;
  created_by: string;
  created: string;
  updated: string;
  finished?: string;
  deadline: string;
}

export interface StatusHistoryEntry {
  time: string;
  from_status: DeployStatus | null;
  status: DeployStatus;
  progress: number;
  message: string;
}

export interface CreateDeployInput {
  node: string;
  deploy_type: DeployType;
  spec: Record<string, unknown>;
  /** Who asks (a token id). */
  by: string;
  callback_url?: string;
  idempotency_key?: string;
  /** Deploy even a version marked bad for the target. */
  force?: boolean;
  /** How long the server waits for the final callback. Default 30 min. */
  deadline_ms?: number;
  /** A manual rollback of this deploy. */
  rollback_of?: string;
}

/** The seed's DeployStatusReport as the agent sends it. */
export interface StatusReportInput {
  status: DeployStatus;
  progress: number;
  message?: string;
  logs?: string[];
}

/** The seed's DeployCallbackPayload. */
export interface CallbackInput {
  callback_id: string;
  command_type: string;
  deploy_type: DeployType;
  status: DeployStatus;
  success: boolean;
  result: Record<string, unknown>;
  error: string;
  duration: number;
  timestamp: string;
}

export interface DeployPage {
  items: DeployRecord[];
  next_cursor?: string;
}

export interface DeployClaim {
  deploy: DeployRecord;
  attempt_id: string;
}

/** How long a claim with no report after it holds the deploy. */
export const CLAIM_LEASE_MS = 30_000;
/** Containers kept per node by the docker monitor. */
const MONITOR_MAX = 500;

/** LOCKED unless the report names the attempt that holds the deploy (when a caller names one). */
function fence(id: string, holder: string | null, attempt: string | undefined): void {
  if (attempt === undefined || holder === attempt) return;
  throw new KkError('LOCKED', `attempt ${attempt} does not hold deploy ${id}${holder ? '' : ' (it was never claimed)'}`, { hint: 'an agent reports only the deploys it claimed' });
}

export function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string } | undefined;
  return e?.code === '23505' || e?.code === 'SQLITE_CONSTRAINT_UNIQUE' || e?.code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/** Where a deploy lands on its node: what "the previous release" and a bad version refer to. */
export function targetOf(type: DeployType, spec: Record<string, unknown>): string {
  if (type === 'docker') return `docker:${String(spec.name ?? '')}`;
  if (type === 'shell') return `shell:${String(spec.workdir ?? '')}`;
  return `${type}:${String(spec.path ?? '')}`;
}

/** The version a spec puts in place, when it names one (kk version, docker image, tar digest). */
export function versionOf(type: DeployType, spec: Record<string, unknown>): string | undefined {
  const v = type === 'kk' ? spec.version : type === 'docker' ? spec.image : type === 'tar' ? spec.sha256 : undefined;
  return typeof v === 'string' && v ? v : undefined;
}

function fromRow(r: Selectable<DeploysTable>): DeployRecord {
  const d: DeployRecord = {
    id: r.id,
    node: r.node,
    target: r.target,
    deploy_type: r.deploy_type as DeployType,
    command_type: r.command_type,
    status: r.status as DeployStatus,
    active: !!r.active,
    progress: r.progress,
    stage: r.stage,
    message: r.message,
    spec: JSON.parse(r.spec) as Record<string, unknown>,
    created_by: r.created_by,
    created: r.created,
    updated: r.updated,
    deadline: new Date(Number(r.deadline_ms)).toISOString(),
  };
  if (r.version !== null) d.version = r.version;
  if (r.rollback_of !== null) d.rollback_of = r.rollback_of;
  if (r.result !== null) d.result = JSON.parse(r.result) as Record<string, unknown>;
  if (r.error !== null) d.error = r.error;
  if (r.error_code !== null) d.error_code = r.error_code;
  if (r.callback_url !== null) d.callback_url = r.callback_url;
  if (r.finished !== null) d.finished = r.finished;
  return d;
}

export interface DeploysOptions {
  /** Secret the callbacks are signed with (the server's webhook_secret); random per URL otherwise. */
  callbackSecret?: string;
  now?: () => number;
}

export class Deploys {
  private readonly db: Kysely<DeploysDatabase>;
  private readonly now: () => number;

  constructor(
    private readonly cdb: ControlDb,
    private readonly events: Events,
    private readonly webhooks: Webhooks,
    private readonly opts: DeploysOptions = {},
  ) {
    this.db = cdb.db as unknown as Kysely<DeploysDatabase>;
    this.now = opts.now ?? Date.now;
  }

  private tx<T>(fn: (tx: DeployExecutor) => Promise<T>): Promise<T> {
    return this.cdb.writeTx((tx) => fn(tx as unknown as DeployExecutor));
  }

  /**
   * A new pending deploy. `created: false` when the same caller already made it with this
   * Idempotency-Key. LOCKED (with `details.active`) when the node has an active deploy;
   * CONFIG_INVALID when the version is marked bad for the target (unless `force`).
   */
  async create(input: CreateDeployInput): Promise<{ deploy: DeployRecord; created: boolean }> {
    if (!(['kk', 'shell', 'tar', 'docker'] as const).includes(input.deploy_type)) throw new KkError('CONFIG_INVALID', `unknown deploy type ${JSON.stringify(input.deploy_type)}`, { hint: 'use kk, shell, tar or docker' });
    if (input.callback_url !== undefined) {
      let u: URL | undefined;
      try {
        u = new URL(input.callback_url);
      } catch {
        // below
      }
      if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) throw new KkError('CONFIG_INVALID', `callback_url ${JSON.stringify(input.callback_url)} is not an http(s) URL`);
    }
    const requestHash = createHash('sha256').update(JSON.stringify([input.node, input.deploy_type, input.spec, input.callback_url ?? null, input.rollback_of ?? null])).digest('hex');
    const target = targetOf(input.deploy_type, input.spec);
    const version = versionOf(input.deploy_type, input.spec);
    const byKey = async (ex: DeployExecutor) =>
      input.idempotency_key === undefined ? undefined : ex.selectFrom('deploys').selectAll().where('created_by', '=', input.by).where('idempotency_key', '=', input.idempotency_key).executeTakeFirst();
    const same = (r: Selectable<DeploysTable>) => {
      if (r.request_hash !== requestHash) throw new KkError('CONFIG_INVALID', `Idempotency-Key ${input.idempotency_key} was used for a different deploy (${r.id})`, { hint: 'use a new key for a new deploy' });
      return { deploy: fromRow(r), created: false };
    };
    const existing = await byKey(this.db);
    if (existing) return same(existing);
    const nowMs = this.now();
    const time = new Date(nowMs).toISOString();
    const id = `dep-${timeId(nowMs)}`;
    try {
      return await this.tx(async (tx) => {
        const node = await tx.selectFrom('nodes').select(['id', 'name']).where((eb) => eb.or([eb('id', '=', input.node), eb('name', '=', input.node)])).executeTakeFirst();
        if (!node) throw new KkError('NOT_FOUND', `node ${input.node} does not exist`, { hint: 'list nodes with kk node list' });
        // A rollback puts back what was there before: the version it names is the one being removed.
        if (version && !input.force && !input.rollback_of) {
          const bad = await tx.selectFrom('deploy_bad_versions').selectAll().where('target', '=', `${node.id}:${target}`).where('version', '=', version).executeTakeFirst();
          if (bad) throw new KkError('CONFIG_INVALID', `${version} is marked bad for ${target} on ${node.name} (deploy ${bad.deploy}: ${bad.reason})`, { hint: 'deploy a newer version, or force it' });
        }
        await tx
          .insertInto('deploys')
          .values({
            id,
            node: node.id,
            target,
            deploy_type: input.deploy_type,
            command_type: input.rollback_of ? 'deploy.rollback' : `deploy.${input.deploy_type}`,
            status: 'pending',
            active: 1,
            progress: 0,
            stage: 'pending',
            message: 'queued',
            spec: JSON.stringify(input.spec),
            version: version ?? null,
            rollback_of: input.rollback_of ?? null,
            result: null,
            error: null,
            error_code: null,
            callback_url: input.callback_url ?? null,
            idempotency_key: input.idempotency_key ?? null,
            request_hash: requestHash,
            created_by: input.by,
            created: time,
            updated: time,
            finished: null,
            deadline_ms: nowMs + (input.deadline_ms ?? 30 * 60_000),
            attempt_id: null,
            claimed_ms: null,
          })
          .execute();
        await tx.insertInto('deploy_status_history').values({ deploy: id, time, from_status: null, to_status: 'pending', progress: 0, message: 'queued' }).execute();
        await this.events.append(tx as unknown as Executor, {
          type: 'deploy.pending',
          time,
          actor: { token: input.by },
          details: { deploy: id, node: node.id, deploy_type: input.deploy_type, command_type: input.rollback_of ? 'deploy.rollback' : `deploy.${input.deploy_type}`, ...(version ? { version } : {}) },
        });
        const row = await tx.selectFrom('deploys').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
        return { deploy: fromRow(row), created: true };
      });
    } catch (err) {
      if (!isUniqueViolation(err)) throw err;
      const again = await byKey(this.db);
      if (again) return same(again);
      const active = await this.db.selectFrom('deploys').select(['id', 'status']).where('node', '=', input.node).where('active', '=', 1).executeTakeFirst();
      const nodeRow = active ? undefined : await this.db.selectFrom('nodes').select('id').where('name', '=', input.node).executeTakeFirst();
      const a = active ?? (nodeRow ? await this.db.selectFrom('deploys').select(['id', 'status']).where('node', '=', nodeRow.id).where('active', '=', 1).executeTakeFirst() : undefined);
      throw new KkError('LOCKED', `node ${input.node} already has an active deploy${a ? ` ${a.id} (${a.status})` : ''}`, {
        hint: 'wait for it to finish, or roll it back',
        details: { active: a?.id ?? null },
      });
    }
  }

  async get(id: string): Promise<DeployRecord | undefined> {
    const r = await this.db.selectFrom('deploys').selectAll().where('id', '=', id).executeTakeFirst();
    return r && fromRow(r);
  }

  async history(id: string): Promise<StatusHistoryEntry[]> {
    const rows = await this.db.selectFrom('deploy_status_history').selectAll().where('deploy', '=', id).orderBy('n').execute();
    return rows.map((r) => ({ time: r.time, from_status: r.from_status as DeployStatus | null, status: r.to_status as DeployStatus, progress: r.progress, message: r.message }));
  }

  async logs(id: string): Promise<{ time: string; line: string }[]> {
    return this.db.selectFrom('deploy_logs').select(['time', 'line']).where('deploy', '=', id).orderBy('n').execute();
  }

  /** A node's deploys, newest first, cursor paged. */
  async list(node: string, opts: { limit?: number; cursor?: string } = {}): Promise<DeployPage> {
    const limit = Math.max(1, Math.min(200, opts.limit ?? 50));
    let q = this.db.selectFrom('deploys').selectAll().where('node', '=', node);
    if (opts.cursor) q = q.where('id', '<', opts.cursor);
    const rows = await q.orderBy('id', 'desc').limit(limit + 1).execute();
    const items = rows.slice(0, limit).map(fromRow);
    return rows.length > limit ? { items, next_cursor: items[items.length - 1]!.id } : { items };
  }

  /** The active deploy of a node (what its agent should be running). */
  async active(node: string): Promise<DeployRecord | undefined> {
    const r = await this.db.selectFrom('deploys').selectAll().where('node', '=', node).where('active', '=', 1).executeTakeFirst();
    return r && fromRow(r);
  }

  /**
   * Apply a status report from the node's agent. A report for another node's deploy is
   * FORBIDDEN; one for a finished deploy, or a step the table does not allow, changes nothing
   * (false): reports are best effort and may arrive late.
   */
  async report(id: string, node: string, r: StatusReportInput, attempt?: string): Promise<boolean> {
    if (!(DEPLOY_STATUSES as readonly string[]).includes(r.status)) throw new KkError('CONFIG_INVALID', `unknown deploy status ${JSON.stringify(r.status)}`);
    return this.tx(async (tx) => {
      const cur = await tx.selectFrom('deploys').select(['node', 'status', 'active', 'attempt_id']).where('id', '=', id).executeTakeFirst();
      if (!cur) throw new KkError('NOT_FOUND', `deploy ${id} does not exist`);
      if (cur.node !== node) throw new KkError('FORBIDDEN', `deploy ${id} belongs to another node`);
      fence(id, cur.attempt_id, attempt);
      await this.appendLogs(tx, id, r.logs ?? []);
      const from = cur.status as DeployStatus;
      // A report never ends a deploy: only the callback (or the deadline) does. A report of a final
      // status (the agent reports before it calls back) keeps its logs and changes nothing else.
      if (!cur.active || FINAL_STATUSES.includes(r.status) || !deployAllowed(from, r.status)) return false;
      const progress = Math.max(0, Math.min(100, Math.round(r.progress)));
      return transitionDeploy(tx, this.events, { id, from, to: r.status, progress, message: r.message ?? r.status, active: true }, `node:${node}`);
    });
  }

  /**
   * The agent's final callback: the final status, result and error; the version marked bad for
   * the target when the deploy failed; the callback queued (signed) when the deploy has a
   * callback_url. Idempotent: a second callback for a finished deploy changes nothing (false).
   */
  async complete(id: string, node: string, p: CallbackInput, attempt?: string): Promise<boolean> {
    if (p.callback_id !== id) throw new KkError('CONFIG_INVALID', `callback_id ${p.callback_id} is not deploy ${id}`);
    if (!(DEPLOY_STATUSES as readonly string[]).includes(p.status)) throw new KkError('CONFIG_INVALID', `unknown deploy status ${JSON.stringify(p.status)}`);
    return this.tx(async (tx) => {
      const cur = await tx.selectFrom('deploys').selectAll().where('id', '=', id).executeTakeFirst();
      if (!cur) throw new KkError('NOT_FOUND', `deploy ${id} does not exist`);
      if (cur.node !== node) throw new KkError('FORBIDDEN', `deploy ${id} belongs to another node`);
      fence(id, cur.attempt_id, attempt);
      if (!cur.active) return false;
      const from = cur.status as DeployStatus;
      const to = deployAllowed(from, p.status) ? p.status : from;
      const time = new Date(this.now()).toISOString();
      const ok = await transitionDeploy(
        tx,
        this.events,
        {
          id,
          from,
          to,
          progress: to === 'success' || to === 'rolled_back' ? 100 : cur.progress,
          message: p.error || (p.success ? 'finished' : to),
          active: false,
          set: { result: JSON.stringify(p.result ?? {}), error: p.error || null, error_code: typeof p.result?.error_code === 'string' ? p.result.error_code : p.success ? null : 'FAILED' },
        },
        `node:${node}`,
        time,
      );
      if (!ok) return false;
      const bad = typeof p.result?.bad_version === 'string' ? p.result.bad_version : undefined;
      // A failed deploy marks what it put there; a manual rollback marks what it took away.
      if (bad && (!p.success || cur.rollback_of)) await this.markBad(tx, `${cur.node}:${cur.target}`, bad, id, p.error || to, time);
      if (cur.callback_url) await this.enqueueCallback(tx, cur.callback_url, id, { ...p, status: to });
      return true;
    });
  }

  /** Deploys whose node stayed silent past the deadline become `timeout` (seed deploy-31). */
  async sweep(): Promise<string[]> {
    const nowMs = this.now();
    const due = await this.db.selectFrom('deploys').select(['id', 'status', 'node', 'callback_url', 'deploy_type', 'command_type', 'created']).where('active', '=', 1).where('deadline_ms', '<', nowMs).execute();
    const out: string[] = [];
    for (const d of due) {
      const ok = await this.tx(async (tx) => {
        const from = d.status as DeployStatus;
        const to: DeployStatus = deployAllowed(from, 'timeout') ? 'timeout' : from;
        const msg = 'the node did not report the outcome before the deadline';
        const done = await transitionDeploy(tx, this.events, { id: d.id, from, to, progress: 0, message: msg, active: false, set: { error: msg, error_code: 'TIMEOUT' } }, 'system');
        if (done && d.callback_url) {
          const time = new Date(nowMs).toISOString();
          await this.enqueueCallback(tx, d.callback_url, d.id, { callback_id: d.id, command_type: d.command_type, deploy_type: d.deploy_type as DeployType, status: to, success: false, result: {}, error: msg, duration: nowMs - Date.parse(d.created), timestamp: time });
        }
        return done;
      });
      if (ok) out.push(d.id);
    }
    return out;
  }

  /**
   * The node's pending deploy for its agent, under a fresh attempt id that every later report
   * and the callback must name (a stale attempt is LOCKED). A claim that no report follows within
   * `leaseMs` (the answer was lost, the agent died before it started) may be claimed again.
   */
  async claim(node: string, leaseMs = CLAIM_LEASE_MS): Promise<DeployClaim | undefined> {
    const nowMs = this.now();
    return this.tx(async (tx) => {
      const r = await tx.selectFrom('deploys').select('id').where('node', '=', node).where('active', '=', 1).where('status', '=', 'pending').executeTakeFirst();
      if (!r) return undefined;
      const attempt = `da-${timeId(nowMs)}`;
      const u = await tx
        .updateTable('deploys')
        .set({ attempt_id: attempt, claimed_ms: nowMs })
        .where('id', '=', r.id)
        .where('status', '=', 'pending')
        .where('active', '=', 1)
        .where((eb) => eb.or([eb('claimed_ms', 'is', null), eb('claimed_ms', '<', nowMs - leaseMs)]))
        .executeTakeFirst();
      if (u.numUpdatedRows === 0n) return undefined;
      const row = await tx.selectFrom('deploys').selectAll().where('id', '=', r.id).executeTakeFirstOrThrow();
      return { deploy: fromRow(row), attempt_id: attempt };
    });
  }

  /**
   * A manual rollback of a finished deploy (seed deploy-25): a new `deploy.rollback` deploy on the
   * same node and target, which the agent runs from what the original saved. NOTHING_TO_ROLLBACK
   * for a deploy that is still running or was already rolled back; LOCKED when the node is busy.
   */
  async rollback(id: string, input: { by: string; callback_url?: string; idempotency_key?: string }): Promise<{ deploy: DeployRecord; created: boolean }> {
    const orig = await this.get(id);
    if (!orig) throw new KkError('NOT_FOUND', `deploy ${id} does not exist`, { hint: 'list a node\'s deploys with kk deploy list --node N' });
    if (orig.active) throw new KkError('NOTHING_TO_ROLLBACK', `deploy ${id} is still ${orig.status}`, { hint: 'wait for it to finish (it rolls back on its own when it fails)' });
    if (orig.status === 'rolled_back' || orig.status === 'rollback_failed') throw new KkError('NOTHING_TO_ROLLBACK', `deploy ${id} was already rolled back (${orig.status})`);
    const cb = input.callback_url ?? orig.callback_url;
    return this.create({
      node: orig.node,
      deploy_type: orig.deploy_type,
      spec: orig.spec,
      by: input.by,
      rollback_of: id,
      ...(cb ? { callback_url: cb } : {}),
      ...(input.idempotency_key ? { idempotency_key: input.idempotency_key } : {}),
    });
  }

  /** The docker monitor's reports from a node (seed deploy-27): the last one per container, replacing the node's set. */
  async recordMonitor(node: string, reports: { name: string; [k: string]: unknown }[]): Promise<number> {
    const time = new Date(this.now()).toISOString();
    return this.tx(async (tx) => {
      await tx.deleteFrom('docker_monitor').where('node', '=', node).execute();
      for (const r of reports.slice(0, MONITOR_MAX)) {
        await tx.insertInto('docker_monitor').values({ node, name: String(r.name).slice(0, 200), report: JSON.stringify(r), time }).execute();
      }
      return Math.min(reports.length, MONITOR_MAX);
    });
  }

  /** What the node's agent last reported about the containers it deployed (seed deploy-28). */
  async monitor(node: string): Promise<{ name: string; received: string; report: Record<string, unknown> }[]> {
    const rows = await this.db.selectFrom('docker_monitor').selectAll().where('node', '=', node).orderBy('name').execute();
    return rows.map((r) => ({ name: r.name, received: r.time, report: JSON.parse(r.report) as Record<string, unknown> }));
  }

  /** Revoke the node's earlier deploy store tokens (minted by the server at each claim, created by `node:<id>:deploy`). */
  async retireStoreTokens(node: string, keep: string): Promise<void> {
    const now = this.now();
    await this.tx(async (tx) => {
      const t = tx as unknown as Kysely<any>;
      await t.updateTable('tokens').set({ revoked: new Date(now).toISOString() }).where('created_by', '=', `node:${node}:deploy`).where('id', '!=', keep).where('revoked', 'is', null).execute();
      await t.deleteFrom('tokens').where('created_by', '=', `node:${node}:deploy`).where('revoked', '<', new Date(now - 86_400_000).toISOString()).execute();
    });
  }

  async isBad(node: string, target: string, version: string): Promise<boolean> {
    return !!(await this.db.selectFrom('deploy_bad_versions').select('version').where('target', '=', `${node}:${target}`).where('version', '=', version).executeTakeFirst());
  }

  async badVersions(node: string, target: string): Promise<{ version: string; deploy: string; reason: string; marked: string }[]> {
    return this.db.selectFrom('deploy_bad_versions').select(['version', 'deploy', 'reason', 'marked']).where('target', '=', `${node}:${target}`).orderBy('marked').execute();
  }

  /** Clear a bad mark (someone fixed it, or promotes it on purpose). */
  async clearBad(node: string, target: string, version: string): Promise<boolean> {
    const r = await this.db.deleteFrom('deploy_bad_versions').where('target', '=', `${node}:${target}`).where('version', '=', version).executeTakeFirst();
    return r.numDeletedRows > 0n;
  }

  private async markBad(tx: DeployExecutor, target: string, version: string, deploy: string, reason: string, time: string): Promise<void> {
    const exists = await tx.selectFrom('deploy_bad_versions').select('version').where('target', '=', target).where('version', '=', version).executeTakeFirst();
    if (exists) await tx.updateTable('deploy_bad_versions').set({ deploy, reason: reason.slice(0, 500), marked: time }).where('target', '=', target).where('version', '=', version).execute();
    else await tx.insertInto('deploy_bad_versions').values({ target, version, deploy, reason: reason.slice(0, 500), marked: time }).execute();
  }

  private async appendLogs(tx: DeployExecutor, id: string, lines: string[]): Promise<void> {
    if (!lines.length) return;
    const time = new Date(this.now()).toISOString();
    for (const line of lines.slice(-DEPLOY_LOG_MAX)) await tx.insertInto('deploy_logs').values({ deploy: id, time, line: line.slice(0, 4096) }).execute();
    const keep = await tx.selectFrom('deploy_logs').select('n').where('deploy', '=', id).orderBy('n', 'desc').offset(DEPLOY_LOG_MAX).limit(1).executeTakeFirst();
    if (keep) await tx.deleteFrom('deploy_logs').where('deploy', '=', id).where('n', '<=', keep.n).execute();
  }

  /**
   * The callback goes through the webhook outbox (retries, claims, the signature header): a
   * hidden webhook row per callback URL that no event matches (`events: []`), and one delivery
   * whose body is the DeployCallbackPayload.
   */
  private async enqueueCallback(tx: DeployExecutor, url: string, id: string, payload: CallbackInput): Promise<void> {
    const hookId = `${HIDDEN_WEBHOOK_PREFIX}${createHash('sha256').update(url).digest('hex').slice(0, 16)}`;
    const time = new Date(this.now()).toISOString();
    const exists = await tx.selectFrom('webhooks').select('id').where('id', '=', hookId).executeTakeFirst();
    if (!exists) {
      await tx
        .insertInto('webhooks')
        .values({ id: hookId, name: `deploy callback ${url}`.slice(0, 200), url, events: '[]', secret: this.opts.callbackSecret ?? randomBytes(24).toString('hex'), project: null, app: null, active: 1, source: 'api', created: time, updated: time })
        .execute();
    }
    const body: CallbackInput = {
      callback_id: payload.callback_id,
      command_type: payload.command_type,
      deploy_type: payload.deploy_type,
      status: payload.status,
      success: payload.success,
      result: payload.result ?? {},
      error: payload.error ?? '',
      duration: payload.duration,
      timestamp: payload.timestamp,
    };
    await this.webhooks.enqueue(tx as unknown as Executor, hookId, `cb-${id}`, 'deploy.callback', JSON.stringify(body), null);
  }
}

export { FINAL_STATUSES };
