// What routes, listings and the retention job see of the server: a small interface, so they do
// not import the server class (server.ts imports them; nothing here imports server.ts).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Digest, GcResult, Hasher, Store, VersionInfo } from '@kk/core';
import type { Control } from '@kk/control';
import type { AuditLog } from './audit.js';
import type { Caches, CachedManifest } from './cache.js';
import type { ServerConfig } from './config.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { Router } from './router.js';
import type { Permission, Principal, TokenService } from './tokens.js';
import type { Webhooks } from './webhooks.js';

/** One request as handlers see it. */
export interface Call {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  /** The authenticated caller (routes marked public have none). */
  principal: Principal;
  /** The client's `X-Kk-Agent` header. */
  agent: string | undefined;
  address: string | undefined;
}

export type Handler = (call: Call) => Promise<void>;

export interface RouteEntry {
  handler: Handler;
  /** No token needed (`/healthz`, `/metrics`). */
  public?: boolean;
}

export interface AuditFields {
  project?: string;
  app?: string;
  version?: string;
  manifest?: string;
  channel?: string;
  previous?: string;
  details?: Record<string, unknown>;
}

export interface ProjectItem {
  name: string;
  created: string;
}

export interface AppItem {
  project: string;
  name: string;
  created: string;
}

export interface VersionItem extends VersionInfo {
  /** Channels pointing at this version (e.g. `promoted`). */
  channels: string[];
}

export interface ChannelItem {
  name: string;
  version: string;
  manifest: string;
  updated: string;
  by: string;
}

export interface ListingApi {
  projects(): Promise<ProjectItem[]>;
  apps(project: string): Promise<AppItem[]>;
  versions(project: string, app: string): Promise<VersionItem[]>;
  channels(project: string, app: string): Promise<ChannelItem[]>;
  noteVersion(project: string, app: string, created: string): Promise<void>;
}

export interface RetentionRun {
  started: string;
  finished: string;
  trigger: 'schedule' | 'api';
  dry_run: boolean;
  retain_versions: number | null;
  apps: number;
  deleted: { project: string; app: string; version: string }[];
  kept_pinned: { project: string; app: string; version: string; reason: string }[];
  gc: GcResult | null;
  gc_error?: string;
  uploads_expired: number;
}

export interface RetentionApi {
  run(opts: { trigger: 'schedule' | 'api'; dryRun?: boolean; keep?: number; token?: string }): Promise<RetentionRun>;
  nextRun(): Date | null;
  lastRun(): Promise<RetentionRun | undefined>;
}

export interface ServerContext {
  readonly router: Router<RouteEntry>;
  readonly store: Store;
  readonly control: Control;
  readonly hasher: Hasher;
  readonly config: ServerConfig;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly caches: Caches;
  readonly tokens: TokenService;
  readonly audit: AuditLog;
  readonly webhooks: Webhooks;
  readonly listing: ListingApi;
  readonly retention: RetentionApi;
  /** FORBIDDEN unless the caller holds `perm` over `project/app` (neither: over everything). */
  require(call: Call, perm: Permission, project?: string, app?: string): void;
  /** FORBIDDEN unless the caller holds any of `perms` over `project/app`. */
  requireAny(call: Call, perms: Permission[], project?: string, app?: string): void;
  /** The permission regardless of scope (chunks are shared by every project). */
  requireUnscoped(call: Call, perms: Permission[]): void;
  covers(call: Call, project?: string, app?: string): boolean;
  /** A manifest by digest, validated, from the cache or the store. NOT_FOUND if absent. */
  manifest(digest: Digest): Promise<CachedManifest>;
  /** Audit + event (+ webhook deliveries) for a state change; never fails it. Resolves the event's seq. */
  activity(call: Call | undefined, action: string, f: AuditFields, actor?: { token: string; agent?: string }): Promise<number | undefined>;
  /** Make every write completed so far durable (a group commit of the store's flush). */
  durable(): Promise<void>;
  /** A private temp directory for whole-file uploads. */
  tmpDir(): Promise<string>;
}
