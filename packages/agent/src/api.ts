// What the agent needs from the server, as one narrow interface (so the loop is testable with a
// fake), and its HTTP implementation. Outbound requests only: the agent works behind NAT.
import { KkError } from '@kk/core';

export type Tags = Record<string, string>;

export interface TaskResult {
  files_added?: number;
  files_changed?: number;
  files_deleted?: number;
  bytes_fetched?: number;
  seconds?: number;
  up_to_date?: boolean;
  [k: string]: unknown;
}

export type TaskOutcome =
  | { ok: true; result: TaskResult }
  | { ok: false; code: string; reason: string; retryable?: boolean; result?: TaskResult };

export interface LogLine {
  time?: string;
  level?: 'info' | 'warn' | 'error';
  line: string;
}

/** A claimed task as the server hands it out (the fields the agent uses). */
export interface ClaimedTask {
  attempt_id: string;
  lease_ms: number;
  /** A pull-only token for the server's store, scoped to the task's app (the server mints one per claim). */
  store_token?: string;
  /** `source` verify: check the directory against the version instead of applying it. */
  task: { id: string; project: string; app: string; version: string; manifest: string | null; attempts: number; source?: string };
  target: { id: string; path: string; strategy: 'mirror' | 'overlay'; include: string[]; exclude: string[]; on_local_change?: string; mode?: 'full' | 'skip-existing' };
}

export interface Report {
  stage?: string;
  progress?: number;
  logs?: LogLine[];
  outcome?: TaskOutcome;
}

export interface HeartbeatAnswer {
  interval_ms: number;
  lease_ms?: number;
  /** False when the attempt the heartbeat named is no longer current (canceled, or replaced). */
  task_current?: boolean;
}

export interface Identity {
  node: string;
  token: string;
  /** A pull token for the server's store routes from older servers (now each claim brings one). */
  store_token?: string;
}

/**
 * The server as the agent sees it. Every method throws KkError: AUTH/FORBIDDEN for credentials,
 * LOCKED when a report names an attempt that is no longer current (never accepted later),
 * BACKEND when the server cannot be reached (try again later).
 */
export interface AgentApi {
  /** Trade a registration token for this node's identity (once). */
  enrol(req: { registration_token: string; name: string; tags: Tags; info: Record<string, unknown> }): Promise<Identity>;
  heartbeat(id: Identity, hb: { info?: Record<string, unknown>; degraded?: string; task?: { id: string; attempt_id: string } }): Promise<HeartbeatAnswer>;
  /** Wait up to `waitMs` for a task of this node; undefined when none came. */
  claim(id: Identity, waitMs: number, signal?: AbortSignal): Promise<ClaimedTask | undefined>;
  report(id: Identity, taskId: string, attemptId: string, r: Report): Promise<void>;
}

/**
 * One JSON request to the kk server. Errors become KkError with the server's code (or one derived
 * from the status), message and hint; an unreachable server is BACKEND.
 */
export async function request(server: string, method: string, path: string, body: unknown, token: string | undefined, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<{ status: number; json: any }> {
  const url = new URL(path, server.endsWith('/') ? server : `${server}/`);
  const signals = [AbortSignal.timeout(opts.timeoutMs ?? 30_000)];
  if (opts.signal) signals.push(opts.signal);
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.any(signals),
    });
  } catch (err) {
    throw new KkError('BACKEND', `cannot reach the kk server at ${url.origin}: ${(err as Error).message}`, { cause: err, hint: 'check the server URL, that the server runs, and the network between them' });
  }
  const text = await res.text();
  let json: any = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (res.status >= 400) {
    const e = json?.error ?? {};
    const code = typeof e.code === 'string' && e.code !== 'BAD_REQUEST' ? e.code : res.status === 401 ? 'AUTH' : res.status === 403 ? 'FORBIDDEN' : res.status === 409 ? 'LOCKED' : res.status === 404 ? 'NOT_FOUND' : res.status === 400 ? 'CONFIG_INVALID' : 'BACKEND';
    throw new KkError(code as never, e.message ?? `${method} ${url.pathname}: HTTP ${res.status}`, { ...(e.hint ? { hint: e.hint } : {}), details: { status: res.status, ...(e.details ?? {}) } });
  }
  return { status: res.status, json };
}

/** The server's HTTP API (routes of packages/server/src/routes/sync.ts). */
export class HttpAgentApi implements AgentApi {
  constructor(
    private readonly server: string,
    private readonly timeoutMs = 30_000,
  ) {}

  private call(method: string, path: string, body: unknown, token: string | undefined, opts: { signal?: AbortSignal; timeoutMs?: number } = {}) {
    return request(this.server, method, path, body, token, { timeoutMs: this.timeoutMs, ...opts });
  }

  async enrol(req: { registration_token: string; name: string; tags: Tags; info: Record<string, unknown> }): Promise<Identity> {
    const { json } = await this.call('POST', 'api/sync/agent/enrol', req, undefined);
    return { node: json.node.id, token: json.token, ...(json.store_token ? { store_token: json.store_token } : {}) };
  }

  async heartbeat(id: Identity, hb: { info?: Record<string, unknown>; degraded?: string; task?: { id: string; attempt_id: string } }): Promise<HeartbeatAnswer> {
    return (await this.call('POST', `api/sync/nodes/${encodeURIComponent(id.node)}/heartbeat`, hb, id.token)).json as HeartbeatAnswer;
  }

  async claim(id: Identity, waitMs: number, signal?: AbortSignal): Promise<ClaimedTask | undefined> {
    const r = await this.call('POST', `api/sync/agent/claim?wait_ms=${Math.max(0, Math.round(waitMs))}`, {}, id.token, { ...(signal ? { signal } : {}), timeoutMs: waitMs + this.timeoutMs });
    return r.status === 204 || !r.json?.task ? undefined : (r.json as ClaimedTask);
  }

  async report(id: Identity, taskId: string, attemptId: string, r: Report): Promise<void> {
    await this.call('POST', `api/sync/tasks/${encodeURIComponent(taskId)}/report`, { attempt_id: attemptId, ...r }, id.token);
  }
}

/** `k=v,k2=v2` (the CLI's --tags) as an object. CONFIG_INVALID for a part without `=`. */
export function parseTags(text: string | undefined): Tags {
  const out: Tags = {};
  for (const part of (text ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new KkError('CONFIG_INVALID', `invalid tag ${JSON.stringify(part)}: use key=value[,key=value...]`);
    out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}
