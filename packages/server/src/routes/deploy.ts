// The deploy center's HTTP API (seed 003 deploy-23..28, DESIGN 14) over @kk/control's Deploys:
// people and tools create deploys (202 + Location, Idempotency-Key honoured; a busy node is 409
// naming its active deploy), read a record, its status history and logs, list a node's deploys
// (cursor paged) and ask for a manual rollback (202). Agents, with their node token and only for
// their own node, long-poll for their node's pending deploy, report stages and the final callback
// under the attempt id the claim gave them, and send the docker monitor's samples. Also the
// deadline sweep: a deploy whose node stays silent past its deadline becomes `timeout`.
//
// Who may: the deploy permission (admin includes it) — over the project for a kk deploy; over
// everything for shell, tar and docker deploys, which run commands on a node.
import { type Waiters, longPoll, newWaiters } from '../long-poll.js';
import { KkError, isKkError } from '@kk/core';
import type { DeployRecord, DeployType } from '@kk/control';
import { HttpError, badRequest, readJson, sendJson } from '../http.js';
import type { Call, ServerContext } from '../context.js';

const BASE = '/api/deploy';
const BODY_LIMIT = 1024 * 1024;
const MAX_SCRIPT_BYTES = 100 * 1024;
const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

export interface DeployService {
  close(): Promise<void>;
  /** One deadline sweep now (tests). */
  sweep(): Promise<string[]>;
}

export function registerDeployRoutes(srv: ServerContext, opts: { sweepEveryMs?: number } = {}): DeployService {
  const r = srv.router;
  const { waiters, wakeAll } = newWaiters();
  for (const kind of ['kk', 'shell', 'tar', 'docker'] as const) {
    r.add('POST', `${BASE}/${kind}`, { handler: (c) => create(srv, c, kind, wakeAll) });
  }
  r.add('POST', `${BASE}/agent/claim`, { public: true, handler: (c) => claim(srv, c, waiters) });
  r.add('GET', `${BASE}/{id}`, { handler: (c) => getDeploy(srv, c) });
  r.add('GET', `${BASE}/{id}/status`, { handler: (c) => getHistory(srv, c) });
  r.add('GET', `${BASE}/{id}/logs`, { handler: (c) => getLogs(srv, c) });
  r.add('GET', `${BASE}/{id}/list`, { handler: (c) => listDeploys(srv, c) });
  r.add('POST', `${BASE}/{id}/rollback`, { handler: (c) => rollback(srv, c, wakeAll) });
  r.add('POST', `${BASE}/{id}/report`, { public: true, handler: (c) => report(srv, c) });
  r.add('POST', `${BASE}/{id}/callback`, { public: true, handler: (c) => callback(srv, c) });
  r.add('GET', '/api/docker/monitor/{id}', { handler: (c) => getMonitor(srv, c) });
  r.add('POST', '/api/docker/monitor/{id}', { public: true, handler: (c) => postMonitor(srv, c) });

  let stopped = false;
  let round: Promise<string[]> | undefined;
  const sweep = async (): Promise<string[]> => {
    if (stopped) return [];
    round ??= srv.control.deploys
      .sweep()
      .then((ids) => {
        for (const id of ids) srv.log.warn('deploy timed out: its node did not report the outcome before the deadline', { deploy: id });
        return ids;
      })
      .catch((err: unknown) => {
        srv.log.warn('deploy deadline sweep failed', { err: String((err as Error)?.message ?? err) });
        return [];
      })
      .finally(() => (round = undefined));
    return round;
  };
  const every = opts.sweepEveryMs ?? (process.env.KK_DEPLOY_SWEEP_MS ? Number(process.env.KK_DEPLOY_SWEEP_MS) : 5_000);
  const timer = setInterval(() => void sweep(), every);
  timer.unref();
  return {
    sweep,
    async close() {
      stopped = true;
      waiters.closing = true;
      clearInterval(timer);
      wakeAll();
      await round;
    },
  };
}

// ---------------------------------------------------------------- auth

function requireFor(srv: ServerContext, c: Call, type: DeployType, spec: Record<string, unknown>): void {
  if (type === 'kk') srv.require(c, 'deploy', String(spec.project), String(spec.app));
  else srv.require(c, 'deploy');
}

function requireRead(srv: ServerContext, c: Call, d: DeployRecord): void {
  requireFor(srv, c, d.deploy_type, d.spec);
}

function bearer(c: Call): string {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(String(c.req.headers.authorization ?? ''));
  if (!m) throw new KkError('AUTH', 'missing bearer token', { hint: 'an agent sends its node token: Authorization: Bearer kkn_...' });
  return m[1]!;
}

function nodeOf(srv: ServerContext, c: Call, node?: string): Promise<string> {
  return srv.control.fleet.authenticateNode(bearer(c), node);
}

async function deployOf(srv: ServerContext, id: string): Promise<DeployRecord> {
  const d = await srv.control.deploys.get(id);
  if (!d) throw new KkError('NOT_FOUND', `deploy ${id} does not exist`, { hint: 'list a node\'s deploys with kk deploy list --node N' });
  return d;
}

// ---------------------------------------------------------------- validation

type J = Record<string, unknown>;

function str(b: J, field: string, opt: true): string | undefined;
function str(b: J, field: string, opt?: false): string;
function str(b: J, field: string, opt = false): string | undefined {
  const v = b[field];
  if (v === undefined || v === null || v === '') {
    if (opt) return undefined;
    throw badRequest(`${field} is required`, { field });
  }
  if (typeof v !== 'string') throw badRequest(`${field} must be a string`, { field });
  return v;
}

function int(b: J, field: string, min: number, max: number): number | undefined {
  const v = b[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw badRequest(`${field} must be an integer from ${min} to ${max}`, { field });
  return v;
}

function script(b: J, field: string, opt: boolean): string | undefined {
  const s = str(b, field, opt as true);
  if (s === undefined) return undefined;
  if (!s.trim()) throw badRequest(`${field} is empty`, { field });
  if (Buffer.byteLength(s) > MAX_SCRIPT_BYTES) throw badRequest(`${field} is ${Buffer.byteLength(s)} bytes, over the ${MAX_SCRIPT_BYTES}-byte limit`, { field });
  return s;
}

function absPath(b: J, field: string, opt = false): string | undefined {
  const p = str(b, field, opt as true);
  if (p === undefined) return undefined;
  if (!p.startsWith('/') || p.split('/').includes('..') || p.includes('\0')) throw new KkError('UNSAFE_PATH', `${field} ${JSON.stringify(p)} must be an absolute path without ..`, { details: { field } });
  if (p === '/') throw new KkError('UNSAFE_PATH', `${field} must not be /`, { details: { field } });
  return p;
}

function strMap(b: J, field: string): Record<string, string> | undefined {
  const v = b[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string')) throw badRequest(`${field} must be an object of strings`, { field });
  return v as Record<string, string>;
}

function strList(b: J, field: string): string[] | undefined {
  const v = b[field];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw badRequest(`${field} must be a list of strings`, { field });
  return v as string[];
}

function health(b: J): J | undefined {
  const h = b.health;
  if (h === undefined || h === null) return undefined;
  if (typeof h !== 'object' || Array.isArray(h)) throw badRequest('health must be an object {type: http|tcp|script, ...}', { field: 'health' });
  const o = h as J;
  const type = o.type;
  const out: J = { type };
  if (type === 'http' || type === 'tcp') {
    const port = int(o, 'port', 1, 65535);
    if (port === undefined) throw badRequest(`health.port is required for a ${type} check`, { field: 'health.port' });
    out.port = port;
    if (o.host !== undefined) out.host = str(o, 'host');
    if (type === 'http') {
      const path = str(o, 'path', true) ?? '/';
      if (!path.startsWith('/')) throw badRequest('health.path must start with /', { field: 'health.path' });
      out.path = path;
    }
  } else if (type === 'script') {
    out.script = script(o, 'script', false);
  } else throw badRequest('health.type must be http, tcp or script', { field: 'health.type' });
  for (const [f, min, max] of [
    ['retries', 0, 100],
    ['interval_ms', 0, 3_600_000],
    ['timeout_ms', 1, 3_600_000],
    ['deadline_ms', 1, 3_600_000],
  ] as const) {
    const v = int(o, f, min, max);
    if (v !== undefined) out[f] = v;
  }
  return out;
}

/** The spec the agent runs, from a request body; 400 naming the field for anything wrong. */
export function specOf(type: DeployType, b: J): J {
  const common: J = {};
  const h = health(b);
  if (h) common.health = h;
  const timeout = int(b, 'timeout_ms', 1, 24 * 3_600_000);
  if (timeout !== undefined) common.timeout_ms = timeout;
  if (b.rollback !== undefined) {
    if (typeof b.rollback !== 'boolean') throw badRequest('rollback must be true or false', { field: 'rollback' });
    common.rollback = b.rollback;
  }
  const env = strMap(b, 'env');
  if (env) common.env = env;
  switch (type) {
    case 'kk': {
      const project = str(b, 'project');
      const app = str(b, 'app');
      const version = str(b, 'version');
      if (!NAME.test(version)) throw badRequest(`version ${JSON.stringify(version)} is not a version name`, { field: 'version' });
      const pre = script(b, 'pre', true);
      const post = script(b, 'post', true);
      return { type, project, app, version, path: absPath(b, 'path'), ...(pre ? { pre } : {}), ...(post ? { post } : {}), ...common };
    }
    case 'shell': {
      const workdir = absPath(b, 'workdir', true);
      const rb = script(b, 'rollback_script', true);
      return { type, script: script(b, 'script', false), ...(workdir ? { workdir } : {}), ...(rb ? { rollback_script: rb } : {}), ...common };
    }
    case 'tar': {
      const sha256 = str(b, 'sha256', true);
      if (sha256 !== undefined && !/^[0-9a-f]{64}$/.test(sha256)) throw badRequest('sha256 must be 64 lowercase hex digits', { field: 'sha256' });
      const upload = str(b, 'upload', true);
      const file = upload ? undefined : absPath(b, 'file');
      if (upload !== undefined && !/^sha256:[0-9a-f]{64}$/.test(upload)) throw badRequest('upload must be the digest of an upload (sha256:<64 hex>, from kk deploy tar)', { field: 'upload' });
      if (upload && !sha256) throw badRequest('sha256 is required with upload', { field: 'sha256' });
      const install = script(b, 'install_script', true);
      return { type, ...(file ? { file } : {}), ...(upload ? { upload } : {}), ...(sha256 ? { sha256 } : {}), path: absPath(b, 'path'), ...(install ? { install_script: install } : {}), ...common };
    }
    case 'docker': {
      const image = str(b, 'image');
      const name = str(b, 'name');
      if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name)) throw badRequest('name must be a container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)', { field: 'name' });
      const ports = b.ports;
      if (ports !== undefined && (!Array.isArray(ports) || ports.some((p) => !p || typeof p !== 'object' || !Number.isInteger((p as J).container) || !Number.isInteger((p as J).host)))) {
        throw badRequest('ports must be a list of {container, host[, protocol, host_ip]}', { field: 'ports' });
      }
      const restart = str(b, 'restart', true);
      if (restart !== undefined && !['no', 'always', 'unless-stopped', 'on-failure'].includes(restart)) throw badRequest('restart must be no, always, unless-stopped or on-failure', { field: 'restart' });
      const out: J = { type, image, name, ...common };
      if (ports) out.ports = ports;
      const cenv = strMap(b, 'container_env');
      if (cenv) out.container_env = cenv;
      const volumes = strList(b, 'volumes');
      if (volumes) out.volumes = volumes;
      const cmd = strList(b, 'cmd');
      if (cmd) out.cmd = cmd;
      if (restart) out.restart = restart;
      const network = str(b, 'network', true);
      if (network) out.network = network;
      const st = int(b, 'stop_timeout', 0, 3600);
      if (st !== undefined) out.stop_timeout = st;
      if (b.insecure === true) out.insecure = true;
      return out;
    }
  }
}

/** How long the server waits for the node's final callback: the work, two health checks, the rollback, and slack. */
function deadlineOf(spec: J): number {
  const work = typeof spec.timeout_ms === 'number' ? spec.timeout_ms : 600_000;
  const h = spec.health as J | undefined;
  const hd = h ? (typeof h.deadline_ms === 'number' ? h.deadline_ms : 60_000) : 0;
  return work + 2 * hd + 15 * 60_000;
}

// ---------------------------------------------------------------- people's calls

function recordOut(d: DeployRecord): DeployRecord & { location: string } {
  return { ...d, location: `${BASE}/${d.id}` };
}

async function create(srv: ServerContext, c: Call, type: DeployType, wake: () => void): Promise<void> {
  const b = await readJson<J>(c.req, BODY_LIMIT);
  const nodeName = str(b, 'node');
  const spec = specOf(type, b);
  requireFor(srv, c, type, spec);
  const callbackUrl = str(b, 'callback_url', true);
  if (b.force !== undefined && typeof b.force !== 'boolean') throw badRequest('force must be true or false', { field: 'force' });
  const node = await srv.control.fleet.node(nodeName);
  const key = c.req.headers['idempotency-key'];
  const deadline = int(b, 'deadline_ms', 1_000, 7 * 24 * 3_600_000);
  const { deploy, created } = await busy(() =>
    srv.control.deploys.create({
      node: node.id,
      deploy_type: type,
      spec,
      by: c.principal.tokenId,
      ...(callbackUrl ? { callback_url: callbackUrl } : {}),
      ...(typeof key === 'string' && key ? { idempotency_key: key.slice(0, 200) } : {}),
      ...(b.force === true ? { force: true } : {}),
      deadline_ms: deadline ?? deadlineOf(spec),
    }),
  );
  if (created) wake();
  await sendJson(c.req, c.res, 202, recordOut(deploy), { location: `${BASE}/${deploy.id}`, ...(created ? {} : { 'idempotent-replayed': 'true' }) });
}

/** The node's one-active-deploy rule as 409, naming the active deploy. */
async function busy<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isKkError(err, 'LOCKED')) throw new HttpError(409, 'LOCKED', `${err.message}; wait for it or roll it back`, err.details);
    throw err;
  }
}

async function getDeploy(srv: ServerContext, c: Call): Promise<void> {
  const d = await deployOf(srv, c.params.id!);
  requireRead(srv, c, d);
  await sendJson(c.req, c.res, 200, recordOut(d));
}

async function getHistory(srv: ServerContext, c: Call): Promise<void> {
  const d = await deployOf(srv, c.params.id!);
  requireRead(srv, c, d);
  await sendJson(c.req, c.res, 200, { deploy: d.id, status: d.status, progress: d.progress, active: d.active, items: await srv.control.deploys.history(d.id) });
}

async function getLogs(srv: ServerContext, c: Call): Promise<void> {
  const d = await deployOf(srv, c.params.id!);
  requireRead(srv, c, d);
  await sendJson(c.req, c.res, 200, { deploy: d.id, items: await srv.control.deploys.logs(d.id) });
}

async function listDeploys(srv: ServerContext, c: Call): Promise<void> {
  srv.require(c, 'deploy');
  const node = await srv.control.fleet.node(c.params.id!);
  const limit = c.query.get('limit') ? Number(c.query.get('limit')) : undefined;
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1 && limit <= 200)) throw badRequest('limit must be an integer from 1 to 200', { field: 'limit' });
  const cursor = c.query.get('cursor') ?? undefined;
  const page = await srv.control.deploys.list(node.id, { ...(limit ? { limit } : {}), ...(cursor ? { cursor } : {}) });
  await sendJson(c.req, c.res, 200, { node: node.id, items: page.items.map(recordOut), next_cursor: page.next_cursor ?? null });
}

async function rollback(srv: ServerContext, c: Call, wake: () => void): Promise<void> {
  const d = await deployOf(srv, c.params.id!);
  requireRead(srv, c, d);
  const b = await readJson<J>(c.req, BODY_LIMIT);
  const callbackUrl = str(b, 'callback_url', true);
  const key = c.req.headers['idempotency-key'];
  const { deploy, created } = await busy(() =>
    srv.control.deploys.rollback(d.id, { by: c.principal.tokenId, ...(callbackUrl ? { callback_url: callbackUrl } : {}), ...(typeof key === 'string' && key ? { idempotency_key: key.slice(0, 200) } : {}) }),
  );
  if (created) wake();
  await sendJson(c.req, c.res, 202, recordOut(deploy), { location: `${BASE}/${deploy.id}` });
}

async function getMonitor(srv: ServerContext, c: Call): Promise<void> {
  srv.require(c, 'deploy');
  const node = await srv.control.fleet.node(c.params.id!);
  await sendJson(c.req, c.res, 200, { node: node.id, items: await srv.control.deploys.monitor(node.id) });
}

// ---------------------------------------------------------------- the agent's calls

/** Long-poll: the node's pending deploy with a fresh attempt id, or 204 after wait_ms. */
async function claim(srv: ServerContext, c: Call, waiters: Waiters): Promise<void> {
  const node = await nodeOf(srv, c);
  await longPoll(c, waiters, async (gone) => {
    const got = await srv.control.deploys.claim(node);
    if (!got) return false;
    // Nobody to hand it to: the claim lapses and the deploy is claimed again.
    if (gone()) return true;
    const token = await storeToken(srv, node, got.deploy);
    await sendJson(c.req, c.res, 200, { ...got, ...(token ? { store_token: token } : {}) });
    return true;
  });
}

/**
 * What the node reads from the store for this deploy, and nothing more, until the deploy's
 * deadline: a kk deploy's project/app; a tar upload's chunks (chunk reads take pull regardless
 * of scope, so the scope names no real project). None for the other kinds.
 */
async function storeToken(srv: ServerContext, node: string, d: DeployRecord): Promise<string | undefined> {
  const s = d.spec;
  const scope = d.deploy_type === 'kk' ? { kind: 'app' as const, project: String(s.project), apps: [String(s.app)] } : d.deploy_type === 'tar' && s.upload ? { kind: 'project' as const, project: 'kk-deploy-uploads' } : undefined;
  if (!scope) return undefined;
  const minted = await srv.control.tokens.mint({ name: `node ${node} deploy ${d.id}`, scope, permissions: ['pull'], expires: Date.parse(d.deadline) }, `node:${node}:deploy`);
  await srv.control.deploys.retireStoreTokens(node, minted.record.id);
  return minted.token;
}

/** A DeployStatusReport from the node's agent, under its attempt. */
async function report(srv: ServerContext, c: Call): Promise<void> {
  const node = await nodeOf(srv, c);
  const b = await readJson<J>(c.req, BODY_LIMIT);
  const attempt = str(b, 'attempt_id');
  const logs = strList(b, 'logs');
  if (typeof b.progress !== 'number' || !Number.isFinite(b.progress)) throw badRequest('progress must be a number from 0 to 100', { field: 'progress' });
  const applied = await srv.control.deploys.report(
    c.params.id!,
    node,
    { status: str(b, 'status') as never, progress: b.progress, ...(str(b, 'message', true) ? { message: str(b, 'message') } : {}), ...(logs ? { logs } : {}) },
    attempt,
  );
  await sendJson(c.req, c.res, 200, { deploy: c.params.id, applied });
}

/** The final DeployCallbackPayload from the node's agent, under its attempt. */
async function callback(srv: ServerContext, c: Call): Promise<void> {
  const node = await nodeOf(srv, c);
  const b = await readJson<J>(c.req, BODY_LIMIT);
  const attempt = str(b, 'attempt_id');
  if (typeof b.success !== 'boolean') throw badRequest('success must be true or false', { field: 'success' });
  if (b.result !== undefined && (typeof b.result !== 'object' || b.result === null || Array.isArray(b.result))) throw badRequest('result must be an object', { field: 'result' });
  const applied = await srv.control.deploys.complete(
    c.params.id!,
    node,
    {
      callback_id: str(b, 'callback_id'),
      command_type: str(b, 'command_type'),
      deploy_type: str(b, 'deploy_type') as DeployType,
      status: str(b, 'status') as never,
      success: b.success,
      result: (b.result as J) ?? {},
      error: typeof b.error === 'string' ? b.error : '',
      duration: typeof b.duration === 'number' ? b.duration : 0,
      timestamp: str(b, 'timestamp', true) ?? new Date().toISOString(),
    },
    attempt,
  );
  await sendJson(c.req, c.res, 200, { deploy: c.params.id, applied });
}

async function postMonitor(srv: ServerContext, c: Call): Promise<void> {
  const node = await nodeOf(srv, c);
  if ((await srv.control.fleet.node(c.params.id!)).id !== node) throw new KkError('FORBIDDEN', `this node token belongs to node ${node}, not ${c.params.id}`, { hint: 'each agent may act only for its own node' });
  const b = await readJson<J>(c.req, BODY_LIMIT);
  if (!Array.isArray(b.containers) || b.containers.some((x) => !x || typeof x !== 'object' || typeof (x as J).name !== 'string')) throw badRequest('containers must be a list of {name, ...}', { field: 'containers' });
  const n = await srv.control.deploys.recordMonitor(node, b.containers as { name: string }[]);
  await sendJson(c.req, c.res, 200, { node, stored: n });
}
