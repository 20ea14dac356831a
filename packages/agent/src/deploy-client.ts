// The deploy API for people and tools (the CLI's `kk deploy`): one method per route of the
// server's /api/deploy, with a kk token. Also what `--wait` / `--follow` need: the status history
// polled until the deploy has ended, each new entry handed to the caller once.
import { KkError } from '@kk/core';
import { request } from './api.js';

type J = Record<string, any>;

export interface DeployHistoryEntry {
  time: string;
  from_status: string | null;
  status: string;
  progress: number;
  message: string;
}

export class DeployClient {
  constructor(
    private readonly server: string,
    private readonly token: string | undefined,
  ) {}

  private async call<T = J>(method: string, path: string, body?: unknown): Promise<T> {
    return (await request(this.server, method, path, body, this.token)).json as T;
  }

  /** POST /api/deploy/<kind> (202): the new record (or the one this Idempotency-Key made). */
  async create(kind: 'kk' | 'shell' | 'tar' | 'docker', body: J, idempotencyKey?: string): Promise<J> {
    const url = new URL(`api/deploy/${kind}`, this.server.endsWith('/') ? this.server : `${this.server}/`);
    let res: Response;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(this.token ? { authorization: `Bearer ${this.token}` } : {}), ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}) },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(60_000),
      });
    } catch (err) {
      throw new KkError('BACKEND', `cannot reach the kk server at ${url.origin}: ${(err as Error).message}`, { hint: 'check the server URL and that the server runs' });
    }
    const json = (await res.json().catch(() => undefined)) as J | undefined;
    if (res.status >= 400) {
      const e = json?.error ?? {};
      const code = typeof e.code === 'string' && e.code !== 'BAD_REQUEST' ? e.code : res.status === 401 ? 'AUTH' : res.status === 403 ? 'FORBIDDEN' : res.status === 409 ? 'LOCKED' : res.status === 404 ? 'NOT_FOUND' : res.status === 400 ? 'CONFIG_INVALID' : 'BACKEND';
      throw new KkError(code, e.message ?? `POST ${url.pathname}: HTTP ${res.status}`, { ...(e.hint ? { hint: e.hint } : {}), details: { status: res.status, ...(e.details ?? {}) } });
    }
    return json!;
  }

  get(id: string) {
    return this.call('GET', `api/deploy/${encodeURIComponent(id)}`);
  }
  history(id: string) {
    return this.call<{ deploy: string; status: string; progress: number; active: boolean; items: DeployHistoryEntry[] }>('GET', `api/deploy/${encodeURIComponent(id)}/status`);
  }
  logs(id: string) {
    return this.call<{ deploy: string; items: { time: string; line: string }[] }>('GET', `api/deploy/${encodeURIComponent(id)}/logs`);
  }
  list(node: string, opts: { cursor?: string; limit?: number } = {}) {
    const q = new URLSearchParams();
    if (opts.cursor) q.set('cursor', opts.cursor);
    if (opts.limit) q.set('limit', String(opts.limit));
    return this.call<{ node: string; items: J[]; next_cursor: string | null }>('GET', `api/deploy/${encodeURIComponent(node)}/list${q.size ? `?${q}` : ''}`);
  }
  rollback(id: string, body: J = {}) {
    return this.call('POST', `api/deploy/${encodeURIComponent(id)}/rollback`, body);
  }
  monitor(node: string) {
    return this.call<{ node: string; items: J[] }>('GET', `api/docker/monitor/${encodeURIComponent(node)}`);
  }

  /**
   * Poll the status history until the deploy is no longer active, calling `onEntry` once per
   * new entry; resolves the final record. Bounded by the deploy's own deadline (plus a minute).
   */
  async follow(id: string, onEntry: (e: DeployHistoryEntry) => void, opts: { everyMs?: number; signal?: AbortSignal } = {}): Promise<J> {
    let seen = 0;
    const first = await this.get(id);
    const until = Date.parse(first.deadline) + 60_000;
    for (let i = 0; i < 1_000_000; i++) {
      const h = await this.history(id);
      for (const e of h.items.slice(seen)) onEntry(e);
      seen = h.items.length;
      if (!h.active) return this.get(id);
      if (Date.now() > until) throw new KkError('BACKEND', `deploy ${id} is still ${h.status} past its deadline`, { hint: 'the server marks it timeout shortly; see kk deploy status' });
      if (opts.signal?.aborted) return this.get(id);
      await new Promise((r) => setTimeout(r, opts.everyMs ?? 500));
    }
    return this.get(id);
  }
}
