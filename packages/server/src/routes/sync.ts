// The fleet's HTTP API (issue 12, DESIGN 13) over @kk/control's Fleet: nodes and registration
// tokens, the agent's enrolment / heartbeat / long-poll claim / report, targets with pause and
// resume, tasks (cursor paged) with cancel and retry, per-project settings. People use kk tokens
// (admin for nodes; admin or promote over the project for its targets and tasks); agents use
// their node token, which acts only for its own node. Also the fleet's background work: the
// sweep (leases, liveness, lapsed pauses) and the follower that turns promote / rollback / push
// events into tasks for the targets that follow them.
import { type Waiters, longPoll, newWaiters } from '../long-poll.js';
import { KkError, isKkError } from '@kk/core';
import type { Claim, Fleet, Target, TaskState } from '@kk/control';
import { parseDuration } from '../config.js';
import { badRequest, readBody, readJson, sendJson } from '../http.js';
import { applyTargetConfig } from '../fleet-config.js';
import type { Call, ServerContext } from '../context.js';
import { hasPermission } from '../tokens.js';
import { testSshNode } from '../ssh-nodes.js';

const BASE = '/api/sync';
const BODY_LIMIT = 4 * 1024 * 1024;
const TRIGGER_CURSOR = 'fleet.trigger_seq';
const TRIGGER_LEASE = 'fleet.trigger';
const STORE_TOKEN_MS = 12 * 3600_000;

export interface SyncService {
  /** Stop the background loops and wake every waiting long-poll. */
  close(): Promise<void>;
  /** One round of background work now (tests). */
  tick(): Promise<void>;
}

export function registerSyncRoutes(srv: ServerContext, opts: { sweepEveryMs?: number } = {}): SyncService {
  const fleet = srv.control.fleet;
  // Timings (ms) from the environment: heartbeat interval sent to agents, lease, offline threshold.
  const env = (name: string) => (process.env[name] ? Number(process.env[name]) : undefined);
  fleet.configure({ heartbeatIntervalMs: env('KK_FLEET_HEARTBEAT_MS'), leaseMs: env('KK_FLEET_LEASE_MS'), offlineAfterMs: env('KK_FLEET_OFFLINE_MS') } as never);
  const r = srv.router;
  const { waiters, wakeAll } = newWaiters();
  fleet.onWork = wakeAll;

  r.add('POST', `${BASE}/registration-tokens`, { handler: (c) => createRegistrationToken(srv, c) });
  r.add('GET', `${BASE}/registration-tokens`, { handler: async (c) => (requireGlobalAdmin(c), sendJson(c.req, c.res, 200, { items: await fleet.listRegistrationTokens() })) });
  r.add('DELETE', `${BASE}/registration-tokens/{id}`, { handler: async (c) => (requireGlobalAdmin(c), await fleet.revokeRegistrationToken(c.params.id!, c.principal.tokenId), sendJson(c.req, c.res, 200, { revoked: c.params.id })) });

  r.add('GET', `${BASE}/nodes`, { handler: (c) => listNodes(srv, c) });
  r.add('POST', `${BASE}/nodes`, { handler: (c) => createNodes(srv, c) });
  r.add('GET', `${BASE}/nodes/{id}`, { handler: (c) => getNode(srv, c) });
  r.add('PATCH', `${BASE}/nodes/{id}`, { handler: (c) => patchNode(srv, c) });
  r.add('DELETE', `${BASE}/nodes/{id}`, { handler: (c) => removeNode(srv, c) });
  r.add('POST', `${BASE}/nodes/{id}/test`, { handler: (c) => testNode(srv, c) });
  r.add('POST', `${BASE}/nodes/{id}/heartbeat`, { public: true, handler: (c) => heartbeat(srv, c) });

  r.add('POST', `${BASE}/agent/enrol`, { public: true, handler: (c) => enrol(srv, c) });
  r.add('POST', `${BASE}/agent/claim`, { public: true, handler: (c) => claim(srv, c, waiters) });
  r.add('POST', `${BASE}/tasks/{id}/report`, { public: true, handler: (c) => report(srv, c) });

  r.add('GET', `${BASE}/targets`, { handler: (c) => listTargets(srv, c) });
  r.add('POST', `${BASE}/targets`, { handler: (c) => addTarget(srv, c) });
  r.add('POST', `${BASE}/targets/apply`, { handler: (c) => applyTargets(srv, c) });
  r.add('GET', `${BASE}/targets/{id}`, { handler: (c) => getTarget(srv, c) });
  r.add('DELETE', `${BASE}/targets/{id}`, { handler: (c) => removeTarget(srv, c) });
  r.add('POST', `${BASE}/targets/{id}/pause`, { handler: (c) => pause(srv, c) });
  r.add('POST', `${BASE}/targets/{id}/resume`, { handler: (c) => resume(srv, c) });
  r.add('POST', `${BASE}/targets/{id}/verify`, { handler: (c) => verifyTarget(srv, c) });
  r.add('POST', `${BASE}/sync`, { handler: (c) => manualSync(srv, c) });

  r.add('GET', `${BASE}/tasks`, { handler: (c) => listTasks(srv, c) });
  r.add('GET', `${BASE}/tasks/{id}`, { handler: (c) => getTask(srv, c) });
  r.add('POST', `${BASE}/tasks/{id}/cancel`, { handler: (c) => cancelTask(srv, c) });
  r.add('POST', `${BASE}/tasks/{id}/retry`, { handler: (c) => retryTask(srv, c) });

  r.add('GET', `${BASE}/projects/{project}`, { handler: (c) => getProject(srv, c) });
  r.add('PUT', `${BASE}/projects/{project}`, { handler: (c) => putProject(srv, c) });

  // ---- background work: one sweep and one follower round every `sweepEveryMs` ----
  // The follower starts from now on the first start with a fleet, not from the whole history.
  const cursorReady = srv.control.events
    .current()
    .then((seq) => srv.control.settings.putIfAbsent(TRIGGER_CURSOR, seq))
    .catch((err) => srv.log.warn('fleet: cannot initialise the event cursor', { err: String((err as Error)?.message ?? err) }));
  let stopped = false;
  let round: Promise<void> | undefined;
  const tick = async () => {
    if (stopped) return;
    round ??= (async () => {
      try {
        await fleet.sweep();
        await cursorReady;
        await followEvents(srv);
      } catch (err) {
        srv.log.warn('fleet background round failed', { err: String((err as Error)?.message ?? err) });
      } finally {
        round = undefined;
      }
    })();
    await round;
  };
  const timer = setInterval(() => void tick(), opts.sweepEveryMs ?? env('KK_FLEET_SWEEP_MS') ?? 2_000);
  timer.unref();
  return {
    tick,
    async close() {
      stopped = true;
      waiters.closing = true;
      clearInterval(timer);
      wakeAll();
      await round;
    },
  };
}

// ---------------------------------------------------------------- auth helpers

function requireGlobalAdmin(c: Call): void {
  if (!(hasPermission(c.principal, 'admin') && c.principal.scope.kind === 'global')) {
    throw new KkError('FORBIDDEN', `token ${c.principal.tokenId} needs the admin permission over everything to manage nodes`);
  }
}

/** Admin or promote over the project (what moving a project's deploys takes). */
function requireProject(srv: ServerContext, c: Call, project: string): void {
  srv.requireAny(c, ['admin', 'promote'], project);
}

function bearer(c: Call): string {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(String(c.req.headers.authorization ?? ''));
  if (!m) throw new KkError('AUTH', 'missing bearer token', { hint: 'an agent sends its node token: Authorization: Bearer kkn_...' });
  return m[1]!;
}

/** The node the caller's node token belongs to; FORBIDDEN when it names another node. */
function nodeOf(srv: ServerContext, c: Call, node?: string): Promise<string> {
  return srv.control.fleet.authenticateNode(bearer(c), node);
}

function str(v: unknown, what: string, opt = false): string | undefined {
  if (v === undefined || v === null) {
    if (opt) return undefined;
    throw badRequest(`${what} is required`);
  }
  if (typeof v !== 'string') throw badRequest(`${what} must be a string`);
  return v;
}

function tagFilter(q: URLSearchParams): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of q.getAll('tag').flatMap((v) => v.split(','))) {
    const eq = t.indexOf('=');
    if (eq <= 0) throw badRequest(`tag filter ${JSON.stringify(t)} must be key=value`);
    out[t.slice(0, eq)] = t.slice(eq + 1);
  }
  return out;
}

// ---------------------------------------------------------------- registration tokens and enrolment

async function createRegistrationToken(srv: ServerContext, c: Call): Promise<void> {
  requireGlobalAdmin(c);
  const b = await readJson<{ name?: string; expires?: string | number; tags?: Record<string, string> }>(c.req, BODY_LIMIT);
  const expiresInMs = b.expires === undefined || b.expires === null || b.expires === '' ? undefined : parseDuration(typeof b.expires === 'number' ? b.expires * 1000 : b.expires);
  const t = await srv.control.fleet.createRegistrationToken({ by: c.principal.tokenId, ...(b.name ? { name: b.name } : {}), ...(expiresInMs ? { expiresInMs } : {}), ...(b.tags ? { tags: b.tags } : {}) });
  await sendJson(c.req, c.res, 201, t);
}

async function enrol(srv: ServerContext, c: Call): Promise<void> {
  const b = await readJson<{ registration_token?: string; name?: string; tags?: Record<string, string>; info?: Record<string, unknown> }>(c.req, BODY_LIMIT);
  const { node, token } = await srv.control.fleet.enrol({
    registrationToken: str(b.registration_token, 'registration_token')!,
    name: str(b.name, 'name')!,
    ...(b.tags ? { tags: b.tags } : {}),
    ...(c.address ? { address: c.address } : {}),
    ...(b.info && typeof b.info === 'object' ? { info: b.info } : {}),
  });
  // No store token here: each claim carries one scoped to its task's app (see claim()).
  await sendJson(c.req, c.res, 201, { node, token, heartbeat_interval_ms: srv.control.fleet.heartbeatIntervalMs });
}

// ---------------------------------------------------------------- nodes

async function listNodes(srv: ServerContext, c: Call): Promise<void> {
  requireGlobalAdmin(c);
  const status = c.query.get('status') ?? undefined;
  if (status && !['ONLINE', 'DEGRADED', 'OFFLINE'].includes(status)) throw badRequest('status must be ONLINE, DEGRADED or OFFLINE');
  const items = await srv.control.fleet.nodes({ tags: tagFilter(c.query), ...(status ? { status: status as 'ONLINE' } : {}), ...(c.query.get('kind') ? { kind: c.query.get('kind')! } : {}) });
  await sendJson(c.req, c.res, 200, { items, seq: await srv.control.events.current() });
}

async function createNodes(srv: ServerContext, c: Call): Promise<void> {
  requireGlobalAdmin(c);
  const b = await readJson<{ nodes?: unknown[] } & Record<string, unknown>>(c.req, BODY_LIMIT);
  const batch = Array.isArray(b.nodes);
  const items = (batch ? b.nodes! : [b]) as { name: string; kind: 'agent' | 'ssh'; address?: string; tags?: Record<string, string> }[];
  if (items.length === 0 || items.length > 1000) throw badRequest('import 1 to 1000 nodes at once');
  const made = await srv.control.fleet.createNodes(items, c.principal.tokenId);
  await sendJson(c.req, c.res, 201, batch ? { items: made } : made[0]);
}

async function getNode(srv: ServerContext, c: Call): Promise<void> {
  requireGlobalAdmin(c);
  const node = await srv.control.fleet.node(c.params.id!);
  const [history, targets] = await Promise.all([srv.control.fleet.statusHistory(node.id, 20), srv.control.fleet.targets({ node: node.id })]);
  await sendJson(c.req, c.res, 200, { ...node, history, targets });
}

async function patchNode(srv: ServerContext, c: Call): Promise<void> {
  requireGlobalAdmin(c);
  const b = await readJson<{ name?: string; address?: string | null; tags?: Record<string, string>; schedulable?: boolean; drain_reason?: string }>(c.req, BODY_LIMIT);
  if (b.schedulable !== undefined && typeof b.schedulable !== 'boolean') throw badRequest('schedulable must be true or false');
  await sendJson(c.req, c.res, 200, await srv.control.fleet.updateNode(c.params.id!, b, c.principal.tokenId));
}

async function removeNode(srv: ServerContext, c: Call): Promise<void> {
  requireGlobalAdmin(c);
  const force = ['1', 'true'].includes(c.query.get('force') ?? '');
  await srv.control.fleet.removeNode(c.params.id!, { by: c.principal.tokenId, force });
  await sendJson(c.req, c.res, 200, { removed: c.params.id });
}

/** Connectivity: an agent is reachable when its last heartbeat is recent (it calls us, never the reverse). */
async function testNode(srv: ServerContext, c: Call): Promise<void> {
  requireGlobalAdmin(c);
  const n = await srv.control.fleet.node(c.params.id!);
  if (n.kind === 'ssh') {
    await sendJson(c.req, c.res, 200, await testSshNode(srv, n.id));
    return;
  }
  const age = n.last_heartbeat ? Date.now() - Date.parse(n.last_heartbeat) : null;
  const ok = age !== null && age < srv.control.fleet.offlineAfterMs;
  await sendJson(c.req, c.res, 200, {
    node: n.id,
    ok,
    status: n.status,
    last_heartbeat: n.last_heartbeat,
    heartbeat_age_ms: age,
    reason: ok ? `heartbeat ${Math.round(age! / 1000)} s ago` : n.last_heartbeat ? `no heartbeat for ${Math.round(age! / 1000)} s: ${n.status_reason}` : 'the agent has never sent a heartbeat',
  });
}

// ---------------------------------------------------------------- the agent's calls

async function heartbeat(srv: ServerContext, c: Call): Promise<void> {
  const node = await nodeOf(srv, c, c.params.id!);
  const b = await readJson<{ info?: Record<string, unknown>; degraded?: string; task?: { id?: string; attempt_id?: string } }>(c.req, BODY_LIMIT);
  const task = b.task && typeof b.task.id === 'string' && typeof b.task.attempt_id === 'string' ? { id: b.task.id, attempt_id: b.task.attempt_id } : undefined;
  const a = await srv.control.fleet.heartbeat(node, { ...(b.info ? { info: b.info } : {}), ...(typeof b.degraded === 'string' && b.degraded ? { degraded: b.degraded } : {}), ...(task ? { task } : {}) });
  await sendJson(c.req, c.res, 200, a);
}

/** Long-poll: claim now, or wait (up to wait_ms) for work to appear, checking every second. */
async function claim(srv: ServerContext, c: Call, waiters: Waiters): Promise<void> {
  const node = await nodeOf(srv, c);
  await longPoll(c, waiters, async (gone) => {
    const got: Claim | undefined = await srv.control.fleet.claim(node);
    if (!got) return false;
    if (gone()) {
      // Nobody to hand it to: the lease lapses and the task is retried.
      srv.log.warn('claimed task for a long-poll that went away', { node, task: got.task.id });
      return true;
    }
    await sendJson(c.req, c.res, 200, { ...got, store_token: await storeToken(srv, node, got) });
    return true;
  });
}

/**
 * The store routes take kk tokens: each claim brings a pull-only token scoped to the task's app,
 * expiring in 12 h, created by `node:<id>` (so node removal revokes it, and a pull it records is
 * known to be that node's). The node's earlier store tokens are revoked (one task at a time), and
 * revoked ones older than a day are deleted so the table does not grow with every task.
 */
async function storeToken(srv: ServerContext, node: string, got: Claim): Promise<string> {
  const minted = await srv.control.tokens.mint({ name: `node ${node} task ${got.task.id}`, scope: { kind: 'app', project: got.task.project, apps: [got.task.app] }, permissions: ['pull'], expires: Date.now() + STORE_TOKEN_MS }, `node:${node}`);
  await srv.control.fleet.retireStoreTokens(node, minted.record.id);
  return minted.token;
}

async function report(srv: ServerContext, c: Call): Promise<void> {
  const node = await nodeOf(srv, c);
  const b = await readJson<{ attempt_id?: string; stage?: string; progress?: number; logs?: { line: string }[]; outcome?: never }>(c.req, BODY_LIMIT);
  if (b.logs !== undefined && (!Array.isArray(b.logs) || b.logs.some((l) => !l || typeof l.line !== 'string'))) throw badRequest('logs must be a list of {line}');
  const t = await srv.control.fleet.report(node, c.params.id!, str(b.attempt_id, 'attempt_id')!, {
    ...(b.stage !== undefined ? { stage: String(b.stage) } : {}),
    ...(typeof b.progress === 'number' ? { progress: b.progress } : {}),
    ...(b.logs ? { logs: b.logs } : {}),
    ...(b.outcome ? { outcome: b.outcome } : {}),
  });
  await sendJson(c.req, c.res, 200, { task: t.id, state: t.state });
}

// ---------------------------------------------------------------- targets

async function listTargets(srv: ServerContext, c: Call): Promise<void> {
  const project = c.query.get('project') ?? undefined;
  if (project) requireProject(srv, c, project);
  else requireGlobalAdmin(c);
  const items = await srv.control.fleet.targets({ ...(project ? { project } : {}), ...(c.query.get('app') ? { app: c.query.get('app')! } : {}), ...(c.query.get('node') ? { node: c.query.get('node')! } : {}) });
  await sendJson(c.req, c.res, 200, { items, seq: await srv.control.events.current() });
}

async function addTarget(srv: ServerContext, c: Call): Promise<void> {
  const b = await readJson<Record<string, unknown>>(c.req, BODY_LIMIT);
  const project = str(b.project, 'project')!;
  srv.require(c, 'admin', project);
  const t = await srv.control.fleet.addTarget({ ...(b as Record<string, never>), project, app: str(b.app, 'app')!, node: str(b.node, 'node')!, path: str(b.path, 'path')!, by: c.principal.tokenId });
  await sendJson(c.req, c.res, 201, t);
}

/**
 * `POST /api/sync/targets/apply[?dry_run=1][&prune=1]`: the seed's YAML target config (see
 * fleet-config.ts), as the body (application/yaml, text) or as JSON {document, source?}. Admin
 * over every project it names. 400 CONFIG_INVALID lists each problem with its line and field.
 */
async function applyTargets(srv: ServerContext, c: Call): Promise<void> {
  const raw = (await readBody(c.req, BODY_LIMIT)).toString('utf8');
  let text = raw;
  let source = 'the target config';
  if (/^application\/json\b/i.test(String(c.req.headers['content-type'] ?? ''))) {
    let j: { document?: unknown; source?: unknown };
    try {
      j = JSON.parse(raw);
    } catch {
      throw badRequest('the request body is not valid JSON');
    }
    if (typeof j?.document !== 'string') throw badRequest('send {"document": "<the YAML text>"} or the YAML itself as application/yaml');
    text = j.document;
    if (typeof j.source === 'string' && j.source.length <= 200) source = j.source;
  }
  const flag = (k: string) => ['1', 'true'].includes(c.query.get(k) ?? '');
  const result = await applyTargetConfig(srv.control.fleet, text, { by: c.principal.tokenId, dryRun: flag('dry_run'), prune: flag('prune'), source, authorize: (project) => srv.require(c, 'admin', project) });
  await sendJson(c.req, c.res, 200, result);
}

async function getTarget(srv: ServerContext, c: Call): Promise<void> {
  const t = await srv.control.fleet.target(c.params.id!);
  requireProject(srv, c, t.project);
  await sendJson(c.req, c.res, 200, await srv.control.fleet.targetStatus(t.id));
}

async function removeTarget(srv: ServerContext, c: Call): Promise<void> {
  const t = await srv.control.fleet.target(c.params.id!);
  srv.require(c, 'admin', t.project);
  await srv.control.fleet.removeTarget(t.id, c.principal.tokenId);
  await sendJson(c.req, c.res, 200, { removed: t.id });
}

async function pause(srv: ServerContext, c: Call): Promise<void> {
  const t = await srv.control.fleet.target(c.params.id!);
  requireProject(srv, c, t.project);
  const b = await readJson<{ reason?: string; until?: string }>(c.req, BODY_LIMIT);
  const untilMs = b.until ? (/^\d{4}-/.test(b.until) ? Date.parse(b.until) : Date.now() + parseDuration(b.until)) : undefined;
  if (untilMs !== undefined && !(untilMs > Date.now())) throw badRequest('until must be in the future (a duration such as 2h, or an ISO time)');
  await sendJson(c.req, c.res, 200, await srv.control.fleet.pause(t.id, { reason: str(b.reason, 'reason')!, by: c.principal.tokenId, ...(untilMs ? { untilMs } : {}) }));
}

/** Resume, then queue one sync of what the target follows (seed 002: resume runs one sync). */
async function resume(srv: ServerContext, c: Call): Promise<void> {
  const t = await srv.control.fleet.target(c.params.id!);
  requireProject(srv, c, t.project);
  const resumed = await srv.control.fleet.resume(t.id, c.principal.tokenId);
  const task = await syncTarget(srv, resumed, 'resume', c.principal.tokenId).catch((err: unknown) => {
    if (isKkError(err, 'NOT_FOUND')) return undefined; // nothing published yet: nothing to sync
    throw err;
  });
  await sendJson(c.req, c.res, 200, { target: resumed, task: task ?? null });
}

/** Queue a verify of what the target holds (CONFLICT pauses it again). */
async function verifyTarget(srv: ServerContext, c: Call): Promise<void> {
  const t = await srv.control.fleet.target(c.params.id!);
  requireProject(srv, c, t.project);
  await sendJson(c.req, c.res, 202, await srv.control.fleet.verify(t.id, c.principal.tokenId));
}

/** What a target follows, resolved in the store now. NOT_FOUND when it names nothing yet. */
async function followed(srv: ServerContext, t: Target): Promise<{ version: string; manifest: string }> {
  if (t.follows === 'promoted') {
    const ch = await srv.store.getChannel(t.project, t.app, 'promoted');
    if (!ch) throw new KkError('NOT_FOUND', `${t.project}/${t.app} has no promoted version yet`, { hint: 'promote a version first (kk promote)' });
    return { version: ch.version, manifest: ch.manifest };
  }
  const v = await srv.store.resolveVersion(t.project, t.app, t.follows === 'latest' ? 'latest' : t.pinned!);
  return { version: v.version, manifest: v.manifest };
}

function syncTarget(srv: ServerContext, t: Target, source: string, by: string) {
  return followed(srv, t).then((v) => srv.control.fleet.enqueue(t.id, { ...v, source, by }));
}

/** `kk sync`: queue what each chosen target follows (a target id, or a project and optionally app/node). */
async function manualSync(srv: ServerContext, c: Call): Promise<void> {
  const b = await readJson<{ target?: string; project?: string; app?: string; node?: string; version?: string }>(c.req, BODY_LIMIT);
  let targets: Target[];
  if (b.target) targets = [await srv.control.fleet.target(b.target)];
  else if (b.project) targets = await srv.control.fleet.targets({ project: b.project, ...(b.app ? { app: b.app } : {}), ...(b.node ? { node: b.node } : {}) });
  else throw badRequest('name a target, or a project (and optionally app and node)');
  for (const p of new Set(targets.map((t) => t.project))) requireProject(srv, c, p);
  const tasks = [];
  for (const t of targets) {
    const v = b.version ? await srv.store.resolveVersion(t.project, t.app, b.version).then((x) => ({ version: x.version, manifest: x.manifest })) : await followed(srv, t);
    tasks.push(await srv.control.fleet.enqueue(t.id, { ...v, source: 'manual', by: c.principal.tokenId }));
  }
  await sendJson(c.req, c.res, 200, { items: tasks });
}

// ---------------------------------------------------------------- tasks and projects

const STATES = new Set(['PENDING', 'RUNNING', 'RETRYING', 'SUCCESS', 'FAILED', 'CANCELED']);

async function listTasks(srv: ServerContext, c: Call): Promise<void> {
  const q = c.query;
  const project = q.get('project') ?? undefined;
  if (project) requireProject(srv, c, project);
  else requireGlobalAdmin(c);
  const status = q.get('status') ?? undefined;
  if (status && !STATES.has(status)) throw badRequest(`status must be one of ${[...STATES].join(', ')}`);
  const limit = q.get('limit') ? Number(q.get('limit')) : undefined;
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1)) throw badRequest('limit must be a positive integer');
  const node = q.get('node') ? (await srv.control.fleet.node(q.get('node')!)).id : undefined;
  const page = await srv.control.fleet.tasks(
    { ...(project ? { project } : {}), ...(q.get('app') ? { app: q.get('app')! } : {}), ...(node ? { node } : {}), ...(q.get('target') ? { target: q.get('target')! } : {}), ...(status ? { state: status as TaskState } : {}) },
    { ...(q.get('cursor') ? { cursor: q.get('cursor')! } : {}), ...(limit ? { limit } : {}) },
  );
  await sendJson(c.req, c.res, 200, { ...page, seq: await srv.control.events.current() });
}

async function getTask(srv: ServerContext, c: Call): Promise<void> {
  const t = await srv.control.fleet.task(c.params.id!);
  requireProject(srv, c, t.project);
  await sendJson(c.req, c.res, 200, t);
}

async function cancelTask(srv: ServerContext, c: Call): Promise<void> {
  const t = await srv.control.fleet.task(c.params.id!);
  requireProject(srv, c, t.project);
  const b = await readJson<{ reason?: string }>(c.req, BODY_LIMIT);
  await sendJson(c.req, c.res, 200, await srv.control.fleet.cancel(t.id, c.principal.tokenId, b.reason || 'canceled by a person'));
}

async function retryTask(srv: ServerContext, c: Call): Promise<void> {
  const t = await srv.control.fleet.task(c.params.id!);
  requireProject(srv, c, t.project);
  await sendJson(c.req, c.res, 200, await srv.control.fleet.retry(t.id, c.principal.tokenId));
}

async function getProject(srv: ServerContext, c: Call): Promise<void> {
  const project = c.params.project!;
  requireProject(srv, c, project);
  await sendJson(c.req, c.res, 200, await srv.control.fleet.project(project));
}

async function putProject(srv: ServerContext, c: Call): Promise<void> {
  const project = c.params.project!;
  srv.require(c, 'admin', project);
  const b = await readJson<Parameters<Fleet['setProject']>[1]>(c.req, BODY_LIMIT);
  await sendJson(c.req, c.res, 200, await srv.control.fleet.setProject(project, b, c.principal.tokenId));
}

// ---------------------------------------------------------------- the follower

/**
 * Turn committed promote / rollback (of `promoted`) and push events into tasks, and pulls by a
 * node with a paused target into alarms (sync.paused_pull), from a cursor
 * kept in the control database, by whichever instance holds the trigger lease. Enqueueing is
 * idempotent (the same version queued or running is kept), so a round repeated after a crash
 * does no harm.
 */
async function followEvents(srv: ServerContext): Promise<void> {
  const c = srv.control;
  const owner = c.owner;
  if (!(await c.leases.acquire(TRIGGER_LEASE, owner, 30_000))) return;
  let since = (await c.settings.get<number>(TRIGGER_CURSOR)) ?? 0;
  for (let round = 0; round < 20; round++) {
    const page = await c.events.since(since, 200);
    for (const e of page.items) {
      if (!e.project || !e.app || !e.version) continue;
      if (e.type === 'pull') {
        await c.fleet.pullObserved({ project: e.project, app: e.app, version: e.version, token: e.actor.token, seq: e.seq, ...(e.actor.agent ? { agent: e.actor.agent } : {}) });
        continue;
      }
      const follows = e.type === 'push' ? 'latest' : (e.type === 'promote' || e.type === 'rollback') && (e.channel ?? 'promoted') === 'promoted' ? 'promoted' : undefined;
      if (!follows) continue;
      await c.fleet.versionChanged({ project: e.project, app: e.app, follows, version: e.version, ...(e.manifest ? { manifest: e.manifest } : {}), source: e.type, by: e.actor.token });
    }
    since = page.next_since;
    await c.settings.put(TRIGGER_CURSOR, since);
    if (!page.more) break;
  }
}
