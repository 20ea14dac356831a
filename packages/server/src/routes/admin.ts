// Administration: tokens (seed 5), webhooks at the seed's paths (seed 6.1, 9) with their
// delivery logs, the audit query (seed 11) and the retention job (seed 6.3).
import { HIDDEN_WEBHOOK_PREFIX } from '@kk/control';
import { KkError } from '@kk/core';
import { parseDuration } from '../config.js';
import { badRequest, pageOf, paginate, readJson, sendJson } from '../http.js';
import type { Call, ServerContext } from '../context.js';
import {
  type MintRequest,
  type TokenRecord,
  hasPermission,
  parsePermissions,
  parseScope,
  publicToken,
  scopeContains,
  scopeCovers,
} from '../tokens.js';
import { type Webhook, type WebhookInput, publicWebhook } from '../webhooks.js';

export function registerAdminRoutes(srv: ServerContext): void {
  const r = srv.router;
  const api = '/api/v1';
  r.add('POST', `${api}/tokens`, { handler: (c) => createToken(srv, c) });
  r.add('GET', `${api}/tokens`, { handler: (c) => listTokens(srv, c) });
  r.add('GET', `${api}/tokens/{id}`, { handler: (c) => getToken(srv, c) });
  r.add('DELETE', `${api}/tokens/{id}`, { handler: (c) => revokeToken(srv, c) });
  for (const base of ['', api]) {
    r.add('GET', `${base}/webhooks`, { handler: (c) => listWebhooks(srv, c) });
    r.add('POST', `${base}/webhooks`, { handler: (c) => createWebhook(srv, c) });
    r.add('GET', `${base}/webhooks/{id}`, { handler: (c) => getWebhook(srv, c) });
    r.add('PUT', `${base}/webhooks/{id}`, { handler: (c) => updateWebhook(srv, c) });
    r.add('DELETE', `${base}/webhooks/{id}`, { handler: (c) => deleteWebhook(srv, c) });
    r.add('GET', `${base}/webhooks/{id}/deliveries`, { handler: (c) => listDeliveries(srv, c) });
    r.add('POST', `${base}/webhooks/{id}/deliveries/{delivery}/redeliver`, { handler: (c) => redeliver(srv, c) });
    r.add('POST', `${base}/webhooks/{id}/ping`, { handler: (c) => ping(srv, c) });
  }
  for (const base of ['', api]) r.add('GET', `${base}/audit`, { handler: (c) => queryAudit(srv, c) });
  r.add('GET', `${api}/events`, { handler: (c) => listEvents(srv, c) });
  r.add('GET', `${api}/retention`, { handler: (c) => retentionStatus(srv, c) });
  r.add('POST', `${api}/retention/run`, { handler: (c) => runRetention(srv, c) });
}

function requireAdminAnywhere(c: Call): void {
  if (!hasPermission(c.principal, 'admin')) throw new KkError('FORBIDDEN', `token ${c.principal.tokenId} lacks the admin permission`);
}

// ---- tokens ----

/** Expiry from `30d`-style durations, ISO times, or null/absent for none. */
function parseExpiry(v: unknown): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'string' && /^\d{4}-\d{2}-\d{2}/.test(v)) {
    const t = Date.parse(v);
    if (Number.isNaN(t)) throw badRequest(`cannot read expiry time ${JSON.stringify(v)}`);
    return t;
  }
  if (typeof v !== 'string' && typeof v !== 'number') throw badRequest('expires must be a duration such as 30d or an ISO time');
  const ms = parseDuration(typeof v === 'number' ? v * 1000 : v);
  if (ms <= 0) throw badRequest('expires must be in the future');
  return Date.now() + ms;
}

async function createToken(srv: ServerContext, c: Call): Promise<void> {
  const body = await readJson(c.req, 64 * 1024);
  if (typeof body.scope !== 'string') throw badRequest('scope is required: global, project:P or app:P/A');
  const req: MintRequest = { scope: parseScope(body.scope), permissions: parsePermissions(body.permissions) };
  if (body.name !== undefined) {
    if (typeof body.name !== 'string' || body.name.length > 200) throw badRequest('name must be a string of at most 200 characters');
    req.name = body.name;
  }
  const expires = parseExpiry(body.expires);
  // A caller that expires hands down its own expiry when none is asked for.
  if (expires !== undefined) req.expires = expires;
  else if (c.principal.expires !== undefined) req.expires = c.principal.expires;
  srv.tokens.checkMint(c.principal, req);
  const { token, record } = await srv.tokens.mint(req, c.principal.tokenId);
  await srv.activity(c, 'token.create', { ...projectOf(record), details: { id: record.id, scope: record.scope, permissions: record.permissions, expires: record.expires } });
  await srv.durable();
  await sendJson(c.req, c.res, 201, { ...publicToken(record), token });
}

function projectOf(rec: TokenRecord): { project?: string; app?: string } {
  const s = parseScope(rec.scope);
  if (s.kind === 'global') return {};
  return s.kind === 'project' ? { project: s.project } : { project: s.project, app: s.apps.length === 1 ? s.apps[0] : undefined };
}

/** A token is visible to admins whose scope contains its scope, and to itself. */
function visibleToken(c: Call, rec: TokenRecord): boolean {
  return rec.id === c.principal.tokenId || (hasPermission(c.principal, 'admin') && scopeContains(c.principal.scope, parseScope(rec.scope)));
}

async function listTokens(srv: ServerContext, c: Call): Promise<void> {
  requireAdminAnywhere(c);
  const page = pageOf(c.query);
  const seq = await srv.control.events.current();
  const all = (await srv.tokens.list()).filter((t) => visibleToken(c, t));
  const out = paginate(all, page, (t) => t.created, (t) => t.id);
  await sendJson(c.req, c.res, 200, { ...out, items: out.items.map(publicToken), seq });
}

async function getToken(srv: ServerContext, c: Call): Promise<void> {
  const rec = await srv.tokens.get(c.params.id!);
  if (!rec || !visibleToken(c, rec)) throw new KkError('NOT_FOUND', `token ${c.params.id} does not exist`);
  await sendJson(c.req, c.res, 200, publicToken(rec));
}

/** Revoke: effective on the very next request, on every instance (tokens are read per request). */
async function revokeToken(srv: ServerContext, c: Call): Promise<void> {
  const rec = await srv.tokens.get(c.params.id!);
  if (!rec || !visibleToken(c, rec)) throw new KkError('NOT_FOUND', `token ${c.params.id} does not exist`);
  const revoked = await srv.tokens.revoke(rec.id);
  await srv.activity(c, 'token.revoke', { ...projectOf(rec), details: { id: rec.id, scope: rec.scope } });
  await srv.durable();
  await sendJson(c.req, c.res, 200, publicToken(revoked!));
}

// ---- webhooks ----

/** Rights over a webhook: admin covering its project/app filter (global admin for unfiltered ones). */
function requireWebhookAdmin(srv: ServerContext, c: Call, w: { project?: string | undefined; app?: string | undefined }): void {
  srv.require(c, 'admin', w.project, w.app);
}

function visibleWebhook(c: Call, w: Webhook): boolean {
  return hasPermission(c.principal, 'admin') && scopeCovers(c.principal.scope, w.project, w.app);
}

async function listWebhooks(srv: ServerContext, c: Call): Promise<void> {
  requireAdminAnywhere(c);
  const seq = await srv.control.events.current();
  const items = (await srv.webhooks.list()).filter((w) => visibleWebhook(c, w)).map(publicWebhook);
  await sendJson(c.req, c.res, 200, { items, total: items.length, seq });
}

function webhookInput(body: Record<string, unknown>): WebhookInput {
  const input: WebhookInput = {};
  for (const k of ['name', 'url', 'events', 'secret', 'project', 'app', 'active'] as const) if (body[k] !== undefined) input[k] = body[k];
  // The seed's config shape (`event: push`) is accepted too.
  if (input.events === undefined && body.event !== undefined) input.events = [body.event];
  return input;
}

async function loadWebhook(srv: ServerContext, c: Call): Promise<Webhook> {
  // Without admin anywhere the answer is 403 for every webhook route, existing id or not.
  requireAdminAnywhere(c);
  const w = await srv.webhooks.get(c.params.id!);
  // kk's hidden per-URL deploy-callback hooks are not webhooks a user manages (DESIGN 14).
  if (!w || w.id.startsWith(HIDDEN_WEBHOOK_PREFIX) || !visibleWebhook(c, w)) throw new KkError('NOT_FOUND', `webhook ${c.params.id} does not exist`);
  return w;
}

async function createWebhook(srv: ServerContext, c: Call): Promise<void> {
  const input = webhookInput(await readJson(c.req, 64 * 1024));
  requireWebhookAdmin(srv, c, { project: input.project as string | undefined, app: input.app as string | undefined });
  const w = await srv.webhooks.create(input);
  await srv.activity(c, 'webhook.create', { project: w.project, app: w.app, details: { id: w.id, url: w.url, events: w.events } });
  await srv.durable();
  // The secret is shown once, here, so the receiver can be configured with it.
  await sendJson(c.req, c.res, 201, { ...publicWebhook(w), secret: w.secret });
}

async function getWebhook(srv: ServerContext, c: Call): Promise<void> {
  await sendJson(c.req, c.res, 200, publicWebhook(await loadWebhook(srv, c)));
}

async function updateWebhook(srv: ServerContext, c: Call): Promise<void> {
  const prev = await loadWebhook(srv, c);
  const input = webhookInput(await readJson(c.req, 64 * 1024));
  requireWebhookAdmin(srv, c, { project: (input.project ?? prev.project) as string | undefined, app: (input.app ?? prev.app) as string | undefined });
  const w = (await srv.webhooks.update(prev.id, input))!;
  await srv.activity(c, 'webhook.update', { project: w.project, app: w.app, details: { id: w.id } });
  await srv.durable();
  await sendJson(c.req, c.res, 200, publicWebhook(w));
}

async function deleteWebhook(srv: ServerContext, c: Call): Promise<void> {
  const w = await loadWebhook(srv, c);
  await srv.webhooks.remove(w.id);
  await srv.activity(c, 'webhook.delete', { project: w.project, app: w.app, details: { id: w.id } });
  await srv.durable();
  c.res.writeHead(204);
  c.res.end();
}

async function listDeliveries(srv: ServerContext, c: Call): Promise<void> {
  const w = await loadWebhook(srv, c);
  const page = pageOf(c.query);
  const seq = await srv.control.events.current();
  const { items, total } = await srv.webhooks.deliveries(w.id, page.offset, page.limit, page.order);
  const next = page.offset + items.length;
  await sendJson(c.req, c.res, 200, { items, total, limit: page.limit, offset: page.offset, order: page.order, next_offset: next < total ? next : null, seq });
}

/** Send a `ping` to one webhook now (test its receiver); 202 with the delivery to follow. */
async function ping(srv: ServerContext, c: Call): Promise<void> {
  const w = await loadWebhook(srv, c);
  const d = await srv.webhooks.ping(w.id, c.principal.tokenId);
  await sendJson(c.req, c.res, 202, d);
}

async function redeliver(srv: ServerContext, c: Call): Promise<void> {
  const w = await loadWebhook(srv, c);
  const d = await srv.webhooks.redeliver(w.id, c.params.delivery!);
  if (!d) throw new KkError('NOT_FOUND', `webhook ${w.id} has no delivery ${c.params.delivery}`);
  await sendJson(c.req, c.res, 202, d);
}

// ---- audit ----

async function queryAudit(srv: ServerContext, c: Call): Promise<void> {
  requireAdminAnywhere(c);
  const q = c.query;
  const page = pageOf(q);
  const seq = await srv.control.events.current();
  const filter: Parameters<ServerContext['audit']['query']>[0] = {};
  for (const k of ['action', 'project', 'app', 'version', 'token', 'agent'] as const) {
    const v = q.get(k);
    if (v) filter[k] = v;
  }
  for (const k of ['since', 'until'] as const) {
    const v = q.get(k);
    if (v) {
      if (Number.isNaN(Date.parse(v))) throw badRequest(`${k} must be an ISO time`);
      filter[k] = new Date(v).toISOString();
    }
  }
  const scope = c.principal.scope;
  if (scope.kind !== 'global') filter.visible = scope.kind === 'project' ? { project: scope.project } : { project: scope.project, apps: scope.apps };
  const cursor = q.get('cursor');
  if (cursor !== null && !/^\d+$/.test(cursor)) throw badRequest('cursor must be the next_cursor of an earlier page');
  const result = await srv.audit.query(filter, cursor === null ? page : { ...page, cursor: Number(cursor) });
  await sendJson(c.req, c.res, 200, { ...result, seq });
}

// ---- events ----

/**
 * `GET /api/v1/events?since=SEQ&limit=N[&type=&project=&app=]`: state changes after `since`,
 * oldest first. Ask again with `since=next_since` to follow; `seq` is the current highest.
 * A scoped token sees its project's (apps') events only.
 */
async function listEvents(srv: ServerContext, c: Call): Promise<void> {
  const p = c.principal;
  if (p.permissions.size === 0) throw new KkError('FORBIDDEN', `token ${p.tokenId} holds no permission`);
  const q = c.query;
  const since = q.get('since') ?? '0';
  if (!/^\d+$/.test(since)) throw badRequest('since must be a non-negative integer (an event seq)');
  const limitRaw = q.get('limit') ?? '50';
  if (!/^\d+$/.test(limitRaw) || Number(limitRaw) < 1) throw badRequest('limit must be a positive integer');
  const limit = Math.min(Number(limitRaw), 500);
  const filter: Parameters<ServerContext['control']['events']['since']>[2] = {};
  for (const k of ['type', 'project', 'app'] as const) {
    const v = q.get(k);
    if (v) filter[k] = v;
  }
  const scope = p.scope;
  if (scope.kind !== 'global') filter.visible = scope.kind === 'project' ? { project: scope.project } : { project: scope.project, apps: scope.apps };
  const r = await srv.control.events.since(Number(since), limit, filter);
  await sendJson(c.req, c.res, 200, { items: r.items, limit, next_since: r.next_since, more: r.more, seq: r.seq });
}

// ---- retention ----

async function retentionStatus(srv: ServerContext, c: Call): Promise<void> {
  requireAdminAnywhere(c);
  const next = srv.retention.nextRun();
  await sendJson(c.req, c.res, 200, {
    schedule: srv.config.retentionSchedule,
    timezone: srv.config.retentionTimezone ?? Intl.DateTimeFormat().resolvedOptions().timeZone,
    retain_versions: srv.config.retainVersions ?? null,
    next_run: next ? next.toISOString() : null,
    last_run: (await srv.retention.lastRun()) ?? null,
  });
}

/** `POST /api/v1/retention/run` {dry_run?, retain_versions?}: the nightly job, now (global admin). */
async function runRetention(srv: ServerContext, c: Call): Promise<void> {
  srv.require(c, 'admin');
  const body = await readJson(c.req, 64 * 1024);
  const keep = body.retain_versions;
  if (keep !== undefined && (!Number.isInteger(keep) || (keep as number) < 1)) throw badRequest('retain_versions must be an integer >= 1');
  const run = await srv.retention.run({ trigger: 'api', dryRun: body.dry_run === true, keep: keep as number | undefined, token: c.principal.tokenId });
  await sendJson(c.req, c.res, 200, run);
}
