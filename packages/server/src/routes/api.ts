// The seed's query and publish API (seed 001 6.1) at its exact paths, mirrored under /api/v1/:
// projects, apps and versions sorted by creation time with pagination, manifests, promote;
// plus rollback, version delete, channels and the batch version query of seed 10.3.
import { type Digest, KkError, assertAppName, assertChannelName, assertProjectName, assertVersionName, isDigest, renderMetaYaml, renderSha256sum } from '@kk/core';
import { badRequest, pageOf, paginate, readJson, sendBytes, sendJson } from '../http.js';
import type { Call, ServerContext } from '../context.js';
import { formatScope, may } from '../tokens.js';
import { pageSorted } from '../listing.js';
import { deleteVersion } from './objects.js';

const READ = ['pull', 'push', 'promote'] as const;

export function registerApiRoutes(srv: ServerContext): void {
  const r = srv.router;
  for (const base of ['', '/api/v1']) {
    r.add('GET', `${base}/projects`, { handler: (c) => listProjects(srv, c) });
    r.add('GET', `${base}/projects/{project}/apps`, { handler: (c) => listApps(srv, c) });
    r.add('GET', `${base}/projects/{project}/apps/{app}/versions`, { handler: (c) => listVersions(srv, c) });
    r.add('GET', `${base}/manifest/{project}/{app}/{hash}`, { handler: (c) => getManifest(srv, c) });
    r.add('POST', `${base}/promote`, { handler: (c) => promote(srv, c) });
    r.add('POST', `${base}/rollback`, { handler: (c) => rollback(srv, c) });
  }
  const api = '/api/v1';
  r.add('GET', `${api}/projects/{project}/apps/{app}/versions/{version}`, { handler: (c) => getVersion(srv, c) });
  r.add('DELETE', `${api}/projects/{project}/apps/{app}/versions/{version}`, { handler: (c) => removeVersion(srv, c) });
  r.add('GET', `${api}/projects/{project}/apps/{app}/channels`, { handler: (c) => listChannels(srv, c) });
  r.add('POST', `${api}/pulls`, { handler: (c) => recordPull(srv, c) });
  r.add('POST', `${api}/versions/query`, { handler: (c) => queryVersions(srv, c) });
  r.add('GET', `${api}/whoami`, { handler: (c) => whoami(c) });
  r.add('GET', '/healthz', { public: true, handler: (c) => healthz(srv, c) });
  r.add('GET', '/metrics', { public: true, handler: (c) => metrics(srv, c) });
}

async function listProjects(srv: ServerContext, c: Call): Promise<void> {
  if (!READ.some((p) => c.principal.permissions.has(p) || c.principal.permissions.has('admin'))) {
    throw new KkError('FORBIDDEN', `token ${c.principal.tokenId} cannot list projects`);
  }
  const page = pageOf(c.query);
  const seq = await srv.control.events.current();
  const scope = c.principal.scope;
  const q = searchOf(c.query);
  // The listing is sorted already (by creation time, then name): filter it, cut the page.
  const sorted = await srv.listing.projects();
  const all = scope.kind === 'global' && !q ? sorted : sorted.filter((p) => (scope.kind === 'global' || scope.project === p.name) && (!q || p.name.toLowerCase().includes(q)));
  await sendJson(c.req, c.res, 200, { ...pageSorted(all, page), seq });
}

async function listApps(srv: ServerContext, c: Call): Promise<void> {
  const { project } = c.params as { project: string };
  const page = pageOf(c.query);
  const seq = await srv.control.events.current();
  const scope = c.principal.scope;
  if (!(scope.kind === 'global' || scope.project === project)) srv.requireAny(c, [...READ], project);
  const q = searchOf(c.query);
  const all = (await srv.listing.apps(project)).filter((a) => READ.some((p) => may(c.principal, p, project, a.name)) && (!q || a.name.toLowerCase().includes(q)));
  if (all.length === 0 && !(await srv.listing.projects()).some((p) => p.name === project)) {
    throw new KkError('NOT_FOUND', `project ${project} does not exist`);
  }
  await sendJson(c.req, c.res, 200, { ...paginate(all, page, (a) => a.created, (a) => a.name), seq });
}

async function listVersions(srv: ServerContext, c: Call): Promise<void> {
  const { project, app } = c.params as { project: string; app: string };
  srv.requireAny(c, [...READ], project, app);
  const page = pageOf(c.query);
  const seq = await srv.control.events.current();
  const all = await srv.listing.versions(project, app);
  if (all.length === 0 && !(await srv.listing.apps(project)).some((a) => a.name === app)) {
    throw new KkError('NOT_FOUND', `app ${project}/${app} does not exist`);
  }
  const out = paginate(all, page, (v) => v.created, (v) => v.version);
  // `details=1`: each version of the page with what its manifest says (size, files, git commit).
  if (c.query.get('details') === '1') out.items = await Promise.all(out.items.map((v) => withDetails(srv, v)));
  await sendJson(c.req, c.res, 200, { ...out, seq });
}

/** `q=TEXT` on a listing: names containing TEXT, case-insensitive (at most 200 characters). */
function searchOf(query: URLSearchParams): string | undefined {
  const q = query.get('q');
  if (q === null || q === '') return undefined;
  if (q.length > 200) throw badRequest('q must be at most 200 characters');
  return q.toLowerCase();
}

async function withDetails<T extends { manifest: Digest }>(srv: ServerContext, v: T): Promise<T & { size: number | null; files: number | null; git_commit: string | null; builder: string | null }> {
  try {
    const { manifest } = await srv.manifest(v.manifest);
    return { ...v, size: manifest.files.reduce((n, f) => n + f.size, 0), files: manifest.files.length, git_commit: manifest.git_commit || null, builder: manifest.builder || null };
  } catch {
    return { ...v, size: null, files: null, git_commit: null, builder: null };
  }
}

async function getVersion(srv: ServerContext, c: Call): Promise<void> {
  const { project, app, version } = c.params as { project: string; app: string; version: string };
  srv.requireAny(c, [...READ], project, app);
  const v = await srv.store.resolveVersion(project, app, version);
  const channels = (await srv.listing.channels(project, app)).filter((ch) => ch.version === v.version).map((ch) => ch.name);
  await sendJson(c.req, c.res, 200, { ...v, channels });
}

async function removeVersion(srv: ServerContext, c: Call): Promise<void> {
  const { project, app, version } = c.params as { project: string; app: string; version: string };
  const deleted = await deleteVersion(srv, c, project, app, version);
  if (!deleted) throw new KkError('NOT_FOUND', `${project}/${app} has no version ${version}`);
  c.res.writeHead(204);
  c.res.end();
}

async function listChannels(srv: ServerContext, c: Call): Promise<void> {
  const { project, app } = c.params as { project: string; app: string };
  srv.requireAny(c, [...READ], project, app);
  const items = await srv.listing.channels(project, app);
  // `history=1`: each channel with its earlier positions, newest first (the store keeps 100).
  if (c.query.get('history') === '1') {
    const full = await Promise.all(items.map(async (ch) => ({ ...ch, history: (await srv.store.getChannel(project, app, ch.name).catch(() => undefined))?.history ?? [] })));
    return sendJson(c.req, c.res, 200, { items: full });
  }
  await sendJson(c.req, c.res, 200, { items });
}

/**
 * `GET /manifest/{project}/{app}/{hash}`: the version's manifest. `{hash}` is a version name,
 * `latest`, a channel, or a manifest digest (`sha256:<hex>`, or the bare hex when no version
 * has that name): the version of this app whose manifest it is. Not a pull (see POST /pulls).
 */
async function getManifest(srv: ServerContext, c: Call): Promise<void> {
  const { project, app, hash } = c.params as { project: string; app: string; hash: string };
  srv.require(c, 'pull', project, app);
  const v = await resolveHash(srv, project, app, hash);
  const { manifest, bytes } = await srv.manifest(v.manifest);
  const headers = { 'x-kk-manifest-digest': v.manifest, 'x-kk-version': v.version, etag: `"${v.manifest.slice(7)}"` };
  const format = c.query.get('format') ?? 'json';
  if (format === 'json') return sendBytes(c.req, c.res, 200, bytes, { 'content-type': 'application/json; charset=utf-8', ...headers }, true);
  if (format === 'meta.yaml') return sendBytes(c.req, c.res, 200, Buffer.from(renderMetaYaml(manifest)), { 'content-type': 'application/yaml; charset=utf-8', ...headers }, true);
  if (format === 'sha256sum') return sendBytes(c.req, c.res, 200, Buffer.from(renderSha256sum(manifest)), { 'content-type': 'text/plain; charset=utf-8', ...headers }, true);
  throw badRequest('format must be json, meta.yaml or sha256sum');
}

/** A version by name, `latest`, channel, or manifest digest (newest version with that manifest). */
async function resolveHash(srv: ServerContext, project: string, app: string, hash: string): Promise<{ version: string; manifest: Digest }> {
  const digest: Digest | undefined = isDigest(hash) ? hash : /^[0-9a-f]{64}$/.test(hash) ? `sha256:${hash}` : undefined;
  if (!digest) return srv.store.resolveVersion(project, app, hash);
  if (digest === hash || !(await srv.store.getRef(project, app, hash))) {
    const match = (await srv.listing.versions(project, app)).find((v) => v.manifest === digest);
    if (match) return match;
    if (digest === hash) throw new KkError('NOT_FOUND', `${project}/${app} has no version whose manifest is ${digest}`);
  }
  return srv.store.resolveVersion(project, app, hash);
}

/**
 * `POST /api/v1/pulls` {project, app, version, manifest, agent?, up_to_date?}: a client reports
 * a completed pull (kk does at the end of every pull that is not a dry run). Audited and sent
 * as the `pull` event, once per report; the version must exist with that manifest.
 */
async function recordPull(srv: ServerContext, c: Call): Promise<void> {
  const body = await readJson(c.req, 64 * 1024);
  const { project, app } = bodyNames(body);
  const { version, manifest } = body;
  if (typeof version !== 'string') throw badRequest('version is required');
  assertVersionName(version);
  if (!isDigest(manifest)) throw badRequest('manifest must be sha256:<64 hex>');
  const agent = body.agent === undefined ? c.agent : body.agent;
  if (agent !== undefined && (typeof agent !== 'string' || agent.length > 256)) throw badRequest('agent must be a string of at most 256 characters');
  srv.require(c, 'pull', project, app);
  const ref = await srv.store.getRef(project, app, version);
  if (!ref) throw new KkError('NOT_FOUND', `${project}/${app} has no version ${version}`);
  if (ref.manifest !== manifest) throw new KkError('MANIFEST_INVALID', `${project}/${app} version ${version} has manifest ${ref.manifest}, not ${manifest}`);
  const details: Record<string, unknown> = {};
  if (typeof body.up_to_date === 'boolean') details.up_to_date = body.up_to_date;
  await srv.activity(c, 'pull', { project, app, version, manifest, details }, { token: c.principal.tokenId, ...(agent ? { agent } : {}) });
  await srv.durable();
  await sendJson(c.req, c.res, 201, { recorded: true, project, app, version, manifest });
}

function bodyNames(body: Record<string, unknown>): { project: string; app: string } {
  const { project, app } = body;
  if (typeof project !== 'string' || typeof app !== 'string') throw badRequest('project and app are required');
  assertProjectName(project);
  assertAppName(app);
  return { project, app };
}

/** `POST /promote` {project, app, version, channel?}: point a channel (default `promoted`) at a version. */
async function promote(srv: ServerContext, c: Call): Promise<void> {
  const body = await readJson(c.req, 64 * 1024);
  const { project, app } = bodyNames(body);
  const version = body.version ?? body.hash;
  const channel = body.channel ?? 'promoted';
  if (typeof version !== 'string') throw badRequest('version is required');
  if (typeof channel !== 'string') throw badRequest('channel must be a string');
  assertVersionName(version);
  assertChannelName(channel);
  srv.require(c, 'promote', project, app);
  const prev = await srv.store.getChannel(project, app, channel);
  const next = await srv.store.setChannel(project, app, channel, version, actorOf(c));
  srv.caches.invalidateApp(project, app);
  await srv.activity(c, 'promote', { project, app, version, manifest: next.manifest, channel, previous: prev?.version });
  await srv.durable();
  await sendJson(c.req, c.res, 200, { project, app, channel, ...next });
}

/**
 * `POST /api/v1/rollback` {project, app, channel?, to?}: move the channel back to `to`, or to
 * the newest earlier position whose version still exists. 409 when there is none.
 */
async function rollback(srv: ServerContext, c: Call): Promise<void> {
  const body = await readJson(c.req, 64 * 1024);
  const { project, app } = bodyNames(body);
  const channel = typeof body.channel === 'string' ? body.channel : 'promoted';
  assertChannelName(channel);
  srv.require(c, 'promote', project, app);
  const current = await srv.store.getChannel(project, app, channel);
  if (!current) throw new KkError('NOT_FOUND', `${project}/${app} has no channel ${channel}`);
  let target: string | undefined;
  if (body.to !== undefined) {
    if (typeof body.to !== 'string') throw badRequest('to must be a version name');
    assertVersionName(body.to);
    target = body.to;
  } else {
    for (const h of current.history) {
      if (h.version !== current.version && (await srv.store.getRef(project, app, h.version))) {
        target = h.version;
        break;
      }
    }
  }
  if (!target) throw new KkError('NOTHING_TO_ROLLBACK', `${project}/${app} channel ${channel} has no earlier version to go back to`);
  const next = await srv.store.setChannel(project, app, channel, target, actorOf(c));
  srv.caches.invalidateApp(project, app);
  await srv.activity(c, 'rollback', { project, app, version: target, manifest: next.manifest, channel, previous: current.version });
  await srv.durable();
  await sendJson(c.req, c.res, 200, { project, app, channel, ...next });
}

/** Seed 10.3's batch query: the versions of many apps in one request. */
async function queryVersions(srv: ServerContext, c: Call): Promise<void> {
  const body = await readJson(c.req, srv.config.maxBodyBytes);
  if (!Array.isArray(body.apps) || body.apps.length > 500) throw badRequest('expected {"apps":[{"project":..,"app":..} or "project/app", ...]} (at most 500)');
  const pageQuery = new URLSearchParams();
  if (body.limit !== undefined) pageQuery.set('limit', String(body.limit));
  if (body.order !== undefined) pageQuery.set('order', String(body.order));
  const page = pageOf(pageQuery);
  const results = [];
  for (const item of body.apps as unknown[]) {
    const [project, app] = typeof item === 'string' ? item.split('/') : [(item as { project?: string })?.project, (item as { app?: string })?.app];
    try {
      if (typeof project !== 'string' || typeof app !== 'string') throw badRequest('each app is {"project","app"} or "project/app"');
      assertProjectName(project);
      assertAppName(app);
      srv.requireAny(c, [...READ], project, app);
      const all = await srv.listing.versions(project, app);
      const { items, total } = paginate(all, page, (v) => v.created, (v) => v.version);
      results.push({ project, app, total, versions: items });
    } catch (err) {
      results.push({ project, app, error: { code: (err as KkError).code ?? 'BAD_REQUEST', message: (err as Error).message } });
    }
  }
  await sendJson(c.req, c.res, 200, { results });
}

async function whoami(c: Call): Promise<void> {
  const p = c.principal;
  await sendJson(c.req, c.res, 200, {
    token: p.tokenId,
    name: p.name,
    scope: formatScope(p.scope),
    permissions: [...p.permissions],
    expires: p.expires === undefined ? null : new Date(p.expires).toISOString(),
  });
}

async function healthz(srv: ServerContext, c: Call): Promise<void> {
  try {
    await srv.store.driver.stat('kk-store.json');
    await sendJson(c.req, c.res, 200, { status: 'ok', store: srv.store.driver.name });
  } catch (err) {
    await sendJson(c.req, c.res, 503, { status: 'unavailable', error: (err as Error).message });
  }
}

async function metrics(srv: ServerContext, c: Call): Promise<void> {
  const text = await srv.metrics.registry.metrics();
  await sendBytes(c.req, c.res, 200, Buffer.from(text), { 'content-type': srv.metrics.registry.contentType }, true);
}

export function actorOf(c: Call): string {
  return c.agent ? `${c.agent} (token ${c.principal.tokenId})` : `token ${c.principal.tokenId}`;
}
