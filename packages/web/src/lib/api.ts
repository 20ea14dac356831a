// The kk API as the UI uses it: the server's base URL (this origin by default, or a configured
// one when the UI is hosted elsewhere), the token from sessionStorage (never in a URL), JSON in
// and out, and the server's error body turned into an ApiError with its code and hint.

const TOKEN_KEY = 'kk.token';
const BASE_KEY = 'kk.api';

export type Permission = 'pull' | 'push' | 'promote' | 'deploy' | 'admin';

export interface Who {
  token: string;
  name: string;
  scope: string;
  permissions: Permission[];
  expires: string | null;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** Where the API is: a saved setting, else the origin this page came from (kk serve's /ui). */
export function apiBase(): string {
  return localStorage.getItem(BASE_KEY) || location.origin;
}

export function setApiBase(url: string): void {
  const u = url.trim().replace(/\/+$/, '');
  if (u && u !== location.origin) localStorage.setItem(BASE_KEY, u);
  else localStorage.removeItem(BASE_KEY);
}

export function savedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token: string | null): void {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Called when the server answers 401: the token is gone or revoked. */
let onAuthLost: (() => void) | undefined;
export function whenAuthLost(fn: () => void): void {
  onAuthLost = fn;
}

type Query = Record<string, string | number | boolean | undefined | null>;

export function qs(query: Query | undefined): string {
  if (!query) return '';
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

export async function api<T = any>(method: string, path: string, opts: { query?: Query; body?: unknown; token?: string; text?: boolean } = {}): Promise<T> {
  const token = opts.token ?? savedToken();
  const headers: Record<string, string> = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(apiBase() + path + qs(opts.query), { method, headers, body: opts.body === undefined ? null : JSON.stringify(opts.body), cache: 'no-store' });
  } catch (err) {
    throw new ApiError(0, 'NETWORK', `cannot reach the server at ${apiBase()}: ${(err as Error).message}`, 'check the server URL and that kk serve is running');
  }
  if (res.status === 204) return undefined as T;
  const raw = await res.text();
  if (!res.ok) {
    let e: { code?: string; message?: string; hint?: string } = {};
    try {
      e = (JSON.parse(raw) as { error?: typeof e }).error ?? {};
    } catch {
      /* not JSON */
    }
    if (res.status === 401 && !opts.token) onAuthLost?.();
    throw new ApiError(res.status, e.code ?? `HTTP_${res.status}`, e.message ?? `${method} ${path}: HTTP ${res.status}`, e.hint);
  }
  if (opts.text) return raw as T;
  return (raw ? JSON.parse(raw) : undefined) as T;
}

export const get = <T = any>(path: string, query?: Query) => api<T>('GET', path, { query });
export const post = <T = any>(path: string, body: unknown = {}) => api<T>('POST', path, { body });

export const enc = encodeURIComponent;

// ---- what the signed-in token may do (the server's rules: control/src/tokens.ts) ----

export interface Scope {
  kind: 'global' | 'project' | 'app';
  project?: string;
  apps?: string[];
}

export function parseScope(s: string): Scope {
  if (s === 'global') return { kind: 'global' };
  const m = /^(project|app):(.+)$/.exec(s);
  if (m?.[1] === 'project') return { kind: 'project', project: m[2]! };
  if (m?.[1] === 'app') {
    const i = m[2]!.indexOf('/');
    return { kind: 'app', project: m[2]!.slice(0, i), apps: m[2]!.slice(i + 1).split(',') };
  }
  return { kind: 'app', project: '', apps: [] };
}

export function covers(scope: Scope, project?: string, app?: string): boolean {
  if (scope.kind === 'global') return true;
  if (project === undefined || scope.project !== project) return false;
  if (scope.kind === 'project') return true;
  return app !== undefined && (scope.apps ?? []).includes(app);
}

export function may(who: Who | undefined, perm: Permission, project?: string, app?: string): boolean {
  if (!who) return false;
  const has = who.permissions.includes(perm) || who.permissions.includes('admin');
  return has && covers(parseScope(who.scope), project, app);
}

/** The permission somewhere in the token's scope (menus: tokens, audit, webhooks need admin). */
export function hasAnywhere(who: Who | undefined, perm: Permission): boolean {
  return !!who && (who.permissions.includes(perm) || who.permissions.includes('admin'));
}
