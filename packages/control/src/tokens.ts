// Tokens (seed 5, DESIGN 9): `kk_<id>_<secret>` bearer tokens. The table keeps the SHA-256 of the
// secret (never the secret), compared in constant time; every request reads its row, so a
// revocation made through any instance applies to the next request anywhere.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { KkError, assertAppName, assertProjectName } from '@kk/core';
import type { ControlDb, Executor } from './db.js';
import type { TokensTable } from './schema.js';

export const PERMISSIONS = ['pull', 'push', 'promote', 'deploy', 'admin'] as const;
export type Permission = (typeof PERMISSIONS)[number];

export type Scope =
  | { kind: 'global' }
  | { kind: 'project'; project: string }
  /** One or more apps of one project (seed 5.1: "app (可多个)"). */
  | { kind: 'app'; project: string; apps: string[] };

export interface TokenRecord {
  id: string;
  name: string;
  /** `sha256:<hex>` of the secret part. */
  hash: string;
  scope: string;
  permissions: Permission[];
  created: string;
  expires: string | null;
  revoked: string | null;
  /** Id of the token that created this one. */
  created_by: string;
  /** When it last authenticated a request, to the minute (null: never). */
  last_used?: string | null;
}

/** Who is calling: a verified token. */
export interface Principal {
  tokenId: string;
  name: string;
  scope: Scope;
  permissions: Set<Permission>;
  /** ms since the epoch, or undefined for no expiry. */
  expires: number | undefined;
}

const TOKEN_RE = /^kk_([0-9a-f]{20})_([A-Za-z0-9_-]{43})$/;

const sha256 = (s: string | Buffer) => createHash('sha256').update(s).digest();

export function parseScope(text: string): Scope {
  if (text === 'global') return { kind: 'global' };
  const m = /^(project|app):(.+)$/.exec(text);
  if (m?.[1] === 'project') {
    assertProjectName(m[2]!);
    return { kind: 'project', project: m[2]! };
  }
  if (m?.[1] === 'app') {
    const slash = m[2]!.indexOf('/');
    if (slash > 0) {
      const project = m[2]!.slice(0, slash);
      const apps = [...new Set(m[2]!.slice(slash + 1).split(','))].sort();
      assertProjectName(project);
      apps.forEach(assertAppName);
      return { kind: 'app', project, apps };
    }
  }
  throw new KkError('CONFIG_INVALID', `invalid scope ${JSON.stringify(text)}: use global, project:P or app:P/A (app:P/A1,A2 for several)`);
}

export function formatScope(s: Scope): string {
  return s.kind === 'global' ? 'global' : s.kind === 'project' ? `project:${s.project}` : `app:${s.project}/${s.apps.join(',')}`;
}

export function parsePermissions(value: unknown): Permission[] {
  const list = typeof value === 'string' ? value.split(',').map((s) => s.trim()).filter(Boolean) : value;
  if (!Array.isArray(list) || list.length === 0) throw new KkError('CONFIG_INVALID', `permissions must list some of ${PERMISSIONS.join(', ')}`);
  for (const p of list) {
    if (!(PERMISSIONS as readonly string[]).includes(p)) {
      throw new KkError('CONFIG_INVALID', `unknown permission ${JSON.stringify(p)} (known: ${PERMISSIONS.join(', ')})`);
    }
  }
  return [...new Set(list as Permission[])].sort((a, b) => PERMISSIONS.indexOf(a) - PERMISSIONS.indexOf(b));
}

/** Whether `scope` includes `project` (and `app`); with neither, whether it is global. */
export function scopeCovers(scope: Scope, project?: string, app?: string): boolean {
  if (scope.kind === 'global') return true;
  if (project === undefined || scope.project !== project) return false;
  if (scope.kind === 'project') return true;
  return app !== undefined && scope.apps.includes(app);
}

/** Whether `outer` includes everything `inner` does. */
export function scopeContains(outer: Scope, inner: Scope): boolean {
  if (outer.kind === 'global') return true;
  if (inner.kind === 'global' || inner.project !== outer.project) return false;
  if (outer.kind === 'project') return true;
  return inner.kind === 'app' && inner.apps.every((a) => outer.apps.includes(a));
}

/** `admin` includes every other permission within its scope. */
export function hasPermission(p: Principal, perm: Permission): boolean {
  return p.permissions.has(perm) || p.permissions.has('admin');
}

export function may(p: Principal, perm: Permission, project?: string, app?: string): boolean {
  return hasPermission(p, perm) && scopeCovers(p.scope, project, app);
}

export interface MintRequest {
  name?: string;
  scope: Scope;
  permissions: Permission[];
  /** ms since the epoch. */
  expires?: number;
}

const ID_RE = /^[0-9a-f]{20}$/;
const LAST_USED_EVERY_MS = 60_000;

function fromRow(r: TokensTable): TokenRecord {
  return {
    id: r.id,
    name: r.name,
    hash: r.hash,
    scope: r.scope,
    permissions: JSON.parse(r.permissions) as Permission[],
    created: r.created,
    expires: r.expires,
    revoked: r.revoked,
    created_by: r.created_by,
    last_used: r.last_used ?? null,
  };
}

export function tokenRow(rec: TokenRecord): TokensTable {
  return { ...rec, permissions: JSON.stringify(rec.permissions) };
}

export class Tokens {
  private readonly presetHash: Buffer | undefined;

  constructor(
    private readonly cdb: ControlDb,
    presetAdminToken?: string,
  ) {
    this.presetHash = presetAdminToken ? sha256(presetAdminToken) : undefined;
  }

  /** The principal behind an `Authorization` header; AUTH for missing, malformed, wrong, expired or revoked. */
  async authenticate(header: string | undefined): Promise<Principal> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!m) throw new KkError('AUTH', 'missing bearer token', { hint: 'send Authorization: Bearer <token> (kk token create)' });
    const presented = m[1]!;
    const presentedHash = sha256(presented);
    if (this.presetHash && timingSafeEqual(presentedHash, this.presetHash)) {
      return { tokenId: 'admin', name: 'KK_ADMIN_TOKEN', scope: { kind: 'global' }, permissions: new Set(['admin']), expires: undefined };
    }
    const t = TOKEN_RE.exec(presented);
    if (!t) throw invalidToken();
    const rec = await this.get(t[1]!);
    if (!rec) throw invalidToken();
    const expected = Buffer.from(rec.hash.slice('sha256:'.length), 'hex');
    const actual = sha256(t[2]!);
    if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) throw invalidToken();
    if (rec.revoked) throw new KkError('AUTH', 'the token has been revoked');
    const expires = rec.expires ? Date.parse(rec.expires) : undefined;
    if (expires !== undefined && expires <= Date.now()) throw new KkError('AUTH', 'the token has expired');
    this.touch(rec);
    return { tokenId: rec.id, name: rec.name, scope: parseScope(rec.scope), permissions: new Set(rec.permissions), expires };
  }

  /**
   * Record the use, at most once a minute per token (a write per request would make every read
   * a write); best effort: a failed write never fails the request.
   */
  private touch(rec: TokenRecord): void {
    const now = Date.now();
    if (rec.last_used && now - Date.parse(rec.last_used) < LAST_USED_EVERY_MS) return;
    const at = new Date(now).toISOString();
    void this.cdb
      .writeTx((tx) => tx.updateTable('tokens').set({ last_used: at }).where('id', '=', rec.id).execute())
      .catch(() => {});
  }

  async get(id: string, ex: Executor = this.cdb.db): Promise<TokenRecord | undefined> {
    if (!ID_RE.test(id)) return undefined;
    const row = await ex.selectFrom('tokens').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? fromRow(row) : undefined;
  }

  /** Create a token; the secret is returned here and nowhere else. */
  async mint(req: MintRequest, createdBy: string, ex: Executor = this.cdb.db): Promise<{ token: string; record: TokenRecord }> {
    const id = randomBytes(10).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const record: TokenRecord = {
      id,
      name: req.name ?? '',
      hash: `sha256:${sha256(secret).toString('hex')}`,
      scope: formatScope(req.scope),
      permissions: req.permissions,
      created: new Date().toISOString(),
      expires: req.expires === undefined ? null : new Date(req.expires).toISOString(),
      revoked: null,
      created_by: createdBy,
    };
    await ex.insertInto('tokens').values(tokenRow(record)).execute();
    return { token: `kk_${id}_${secret}`, record };
  }

  /**
   * Check that `caller` may create a token like `req`: admin permission, and nothing beyond its
   * own scope, permissions or expiry. FORBIDDEN otherwise.
   */
  checkMint(caller: Principal, req: MintRequest): void {
    if (!hasPermission(caller, 'admin')) throw new KkError('FORBIDDEN', 'creating tokens needs the admin permission');
    if (!scopeContains(caller.scope, req.scope)) {
      throw new KkError('FORBIDDEN', `scope ${formatScope(req.scope)} is wider than this token's ${formatScope(caller.scope)}`);
    }
    for (const p of req.permissions) {
      if (!hasPermission(caller, p)) throw new KkError('FORBIDDEN', `permission ${p} is not held by this token`);
    }
    if (caller.expires !== undefined && (req.expires === undefined || req.expires > caller.expires)) {
      throw new KkError('FORBIDDEN', `the new token must expire no later than this one (${new Date(caller.expires).toISOString()})`);
    }
  }

  /** Every token, oldest first. */
  async list(ex: Executor = this.cdb.db): Promise<TokenRecord[]> {
    const rows = await ex.selectFrom('tokens').selectAll().orderBy('created').orderBy('id').execute();
    return rows.map(fromRow);
  }

  /** Revoke (idempotent: a second revoke keeps the first time). undefined if there is no such token. */
  async revoke(id: string, ex: Executor = this.cdb.db): Promise<TokenRecord | undefined> {
    if (!ID_RE.test(id)) return undefined;
    await ex.updateTable('tokens').set({ revoked: new Date().toISOString() }).where('id', '=', id).where('revoked', 'is', null).execute();
    return this.get(id, ex);
  }

  async any(ex: Executor = this.cdb.db): Promise<boolean> {
    return !!(await ex.selectFrom('tokens').select('id').limit(1).executeTakeFirst());
  }
}

function invalidToken(): KkError {
  return new KkError('AUTH', 'invalid token', { hint: 'check the token; create one with kk token create' });
}

/** A token record as the API shows it: everything but the hash. */
export function publicToken(rec: TokenRecord): Omit<TokenRecord, 'hash'> {
  const { hash: _hash, ...rest } = rec;
  return rest;
}
