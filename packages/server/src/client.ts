// A small client for the server's administration API (tokens), for `kk token ...` and for
// tools that embed kk. Errors come back as KkErrors with the server's code.
import { request } from 'undici';
import { ERROR_CODES, KkError, type KkErrorCode } from '@kk/core';
import type { AuditEntry } from './audit.js';
import type { TokenRecord } from './tokens.js';

export type PublicToken = Omit<TokenRecord, 'hash'>;

export interface AuditQuery {
  action?: string;
  project?: string;
  app?: string;
  version?: string;
  token?: string;
  agent?: string;
  /** ISO times. */
  since?: string;
  until?: string;
  limit?: number;
  order?: 'asc' | 'desc';
  cursor?: number;
}

export interface CreateTokenRequest {
  /** `global`, `project:P`, `app:P/A` or `app:P/A1,A2`. */
  scope: string;
  permissions: string[];
  /** A duration such as `30d`, or an ISO time. Default: none (or the creating token's expiry). */
  expires?: string;
  name?: string;
}

export class KkServerClient {
  private readonly base: string;

  constructor(
    url: string,
    private readonly token: string | undefined,
    private readonly agent = 'kk-cli',
  ) {
    let u: URL;
    try {
      u = new URL(url);
    } catch (err) {
      throw new KkError('CONFIG_INVALID', `malformed server URL "${url}"`, { cause: err });
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new KkError('CONFIG_INVALID', `the server URL must be http(s), got ${u.protocol}`);
    this.base = `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
  }

  /** Create a token; the secret (`token`) is in this answer only. */
  createToken(req: CreateTokenRequest): Promise<PublicToken & { token: string }> {
    return this.json('POST', '/api/v1/tokens', req);
  }

  async listTokens(): Promise<PublicToken[]> {
    const out: PublicToken[] = [];
    for (let offset = 0; ; ) {
      const page = await this.json<{ items: PublicToken[]; next_offset: number | null }>('GET', `/api/v1/tokens?limit=500&order=asc&offset=${offset}`);
      out.push(...page.items);
      if (page.next_offset === null) return out;
      offset = page.next_offset;
    }
  }

  revokeToken(id: string): Promise<PublicToken> {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(id)) throw new KkError('INVALID_NAME', `invalid token id ${JSON.stringify(id)}`);
    return this.json('DELETE', `/api/v1/tokens/${id}`);
  }

  /** One page of the audit log (newest first unless order=asc); `cursor` continues from a page's `next_cursor`. */
  audit(query: AuditQuery = {}): Promise<{ items: AuditEntry[]; total?: number; next_cursor: number | null; next_offset: number | null; seq: number }> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') q.set(k, String(v));
    return this.json('GET', `/api/v1/audit${q.size ? `?${q}` : ''}`);
  }

  whoami(): Promise<{ token: string; name: string; scope: string; permissions: string[]; expires: string | null }> {
    return this.json('GET', '/api/v1/whoami');
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { 'x-kk-agent': this.agent, accept: 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await request(`${this.base}${path}`, { method: method as 'GET', headers, body: body === undefined ? null : JSON.stringify(body) });
    } catch (err) {
      throw new KkError('BACKEND', `kk server ${this.base}: ${(err as Error).message}`, { cause: err, hint: 'check --server and that the server is running' });
    }
    const text = await res.body.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      parsed = undefined;
    }
    if (res.statusCode >= 200 && res.statusCode < 300) return parsed as T;
    const e = (parsed as { error?: { code?: string; message?: string; hint?: string } } | undefined)?.error;
    const code: KkErrorCode =
      e?.code && e.code in ERROR_CODES ? (e.code as KkErrorCode) : res.statusCode === 401 ? 'AUTH' : res.statusCode === 403 ? 'FORBIDDEN' : res.statusCode === 404 ? 'NOT_FOUND' : res.statusCode >= 500 ? 'BACKEND' : 'CONFIG_INVALID';
    throw new KkError(code, e?.message ?? `${method} ${path}: HTTP ${res.statusCode}`, e?.hint ? { hint: e.hint } : {});
  }
}
