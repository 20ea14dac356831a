// Server configuration: defaults, the YAML file (`kk-server.yml`, snake_case keys like the
// agent's `.kkartifact.yml`) and duration/size parsing. Everything here is plain data.
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Cron } from 'croner';
import { parse as parseYaml } from 'yaml';
import { KkError, parseSize } from '@kk/core';
import { checkEvents, checkWebhookUrl } from '@kk/control';

export interface WebhookConfig {
  /** Unique name; the webhook's id is `cfg-<name>`. */
  name: string;
  url: string;
  /** Events to deliver (`push`, `pull`, `promote`, `rollback`, `delete`, or `*`). */
  events: string[];
  /** HMAC-SHA256 key for the signature header. Default: the server's `webhook_secret`. */
  secret?: string;
  /** Only events of this project (and app). */
  project?: string;
  app?: string;
}

export interface ServerConfig {
  /** Keep the newest N versions of every app at each retention run. Default: unset (keep all). */
  retainVersions?: number;
  /** Cron expression of the retention + GC run. Default `0 3 * * *` (daily 03:00). */
  retentionSchedule: string;
  /** IANA time zone of the schedule. Default: the server's local time. */
  retentionTimezone?: string;
  /** Unreferenced chunks younger than this survive GC. Default 1 hour. */
  gcGraceMs: number;
  /** Largest request body except whole-file uploads. Default 64 MiB. */
  maxBodyBytes: number;
  /** Largest file accepted by `PUT /file/...`. Default 64 GiB. */
  maxFileBytes: number;
  /** How long cached refs behind an unchanged version listing, and the webhook list, are reused. Default 5 s. */
  cacheTtlMs: number;
  /** Bytes of manifests kept in memory. Default 64 MiB. */
  manifestCacheBytes: number;
  /** Webhooks declared in the config file (seed 9.3). */
  webhooks: WebhookConfig[];
  /** Default signing key for webhooks that have none. */
  webhookSecret?: string;
  /** Per-attempt timeout of a webhook delivery. Default 10 s. */
  webhookTimeoutMs: number;
  /** Attempts before a delivery is marked failed. Default 12. */
  webhookMaxAttempts: number;
  /** First retry delay; doubles per attempt, with jitter. Default 1 s. */
  webhookBackoffMs: number;
  /** Longest retry delay. Default 1 hour. */
  webhookBackoffMaxMs: number;
  /** How often the outbox is scanned for due deliveries. Default 1 s. */
  webhookPollMs: number;
  /** Deliveries in flight per server instance. Default 8. */
  webhookConcurrency: number;
  /** Upload sessions (`/upload/init`) expire after this long. Default 24 hours. */
  uploadTtlMs: number;
  /** Directory for whole-file uploads being chunked. Default: the OS temp dir. */
  tmpDir?: string;
  /** Take the client address from `X-Forwarded-For` (behind a reverse proxy). Default false. */
  trustProxy: boolean;
  /** Hashing worker threads. Default: available parallelism. */
  hasherThreads?: number;
  /** Origins allowed to call the API from a browser (CORS), e.g. the host of a separately deployed web UI; `*` for any. Default: none. */
  corsOrigins?: string[];
  /** The control database URL (`db:` in the file; `kk serve --db`, KK_DB). Default: SQLite in the state directory. */
  db?: string;
}

export const DEFAULT_RETENTION_SCHEDULE = '0 3 * * *';

export const DEFAULT_CONFIG: ServerConfig = {
  retentionSchedule: DEFAULT_RETENTION_SCHEDULE,
  gcGraceMs: 3_600_000,
  maxBodyBytes: 64 * 1024 * 1024,
  maxFileBytes: 64 * 1024 ** 3,
  cacheTtlMs: 5_000,
  manifestCacheBytes: 64 * 1024 * 1024,
  webhooks: [],
  webhookTimeoutMs: 10_000,
  webhookMaxAttempts: 12,
  webhookBackoffMs: 1_000,
  webhookBackoffMaxMs: 3_600_000,
  webhookPollMs: 1_000,
  webhookConcurrency: 8,
  uploadTtlMs: 24 * 3_600_000,
  trustProxy: false,
};

export function resolveConfig(partial: Partial<ServerConfig> = {}): ServerConfig {
  const c: ServerConfig = { ...DEFAULT_CONFIG, ...stripUndefined(partial) };
  if (c.retainVersions !== undefined && (!Number.isInteger(c.retainVersions) || c.retainVersions < 1)) {
    throw new KkError('CONFIG_INVALID', 'retain_versions must be an integer >= 1');
  }
  for (const w of c.webhooks) checkWebhookConfig(w);
  try {
    const cron = new Cron(c.retentionSchedule, { paused: true, ...(c.retentionTimezone ? { timezone: c.retentionTimezone } : {}) });
    cron.nextRun();
    cron.stop();
  } catch (cause) {
    throw new KkError('CONFIG_INVALID', `retention_schedule ${JSON.stringify(c.retentionSchedule)} (time zone ${c.retentionTimezone ?? 'local'}): ${(cause as Error).message}`, {
      cause,
      hint: 'use a cron expression such as "0 3 * * *" (daily at 03:00) and an IANA time zone such as Europe/Berlin',
    });
  }
  return c;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** `30d`, `12h`, `15m`, `45s`, `500ms`, or a number of milliseconds. */
export function parseDuration(value: string | number): number {
  if (typeof value === 'number') {
    if (!(value >= 0)) throw new KkError('CONFIG_INVALID', `bad duration ${value}`);
    return value;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/i.exec(value);
  if (!m) throw new KkError('CONFIG_INVALID', `cannot read duration ${JSON.stringify(value)}: use e.g. 30d, 12h, 15m, 45s`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[(m[2] ?? 'ms').toLowerCase() as 'ms'];
  return Math.round(Number(m[1]) * unit);
}

const FILE_KEYS: Record<string, (c: Partial<ServerConfig>, v: unknown) => void> = {
  retain_versions: (c, v) => (c.retainVersions = int(v, 'retain_versions')),
  retention_schedule: (c, v) => (c.retentionSchedule = str(v, 'retention_schedule')),
  retention_timezone: (c, v) => (c.retentionTimezone = str(v, 'retention_timezone')),
  gc_grace: (c, v) => (c.gcGraceMs = parseDuration(v as string)),
  max_body: (c, v) => (c.maxBodyBytes = parseSize(v as string)),
  max_file: (c, v) => (c.maxFileBytes = parseSize(v as string)),
  cache_ttl: (c, v) => (c.cacheTtlMs = parseDuration(v as string)),
  manifest_cache: (c, v) => (c.manifestCacheBytes = parseSize(v as string)),
  webhook_secret: (c, v) => (c.webhookSecret = str(v, 'webhook_secret')),
  webhook_timeout: (c, v) => (c.webhookTimeoutMs = parseDuration(v as string)),
  webhook_max_attempts: (c, v) => (c.webhookMaxAttempts = int(v, 'webhook_max_attempts')),
  webhook_backoff: (c, v) => (c.webhookBackoffMs = parseDuration(v as string)),
  webhook_backoff_max: (c, v) => (c.webhookBackoffMaxMs = parseDuration(v as string)),
  webhook_poll: (c, v) => (c.webhookPollMs = parseDuration(v as string)),
  upload_ttl: (c, v) => (c.uploadTtlMs = parseDuration(v as string)),
  tmp_dir: (c, v) => (c.tmpDir = str(v, 'tmp_dir')),
  db: (c, v) => (c.db = str(v, 'db')),
  trust_proxy: (c, v) => (c.trustProxy = v === true),
  cors_origins: (c, v) => {
    const list = typeof v === 'string' ? [v] : v;
    if (!Array.isArray(list)) throw new KkError('CONFIG_INVALID', 'cors_origins must be a list of origins such as https://ui.example.org (or "*")');
    c.corsOrigins = list.map((o) => {
      const s = str(o, 'cors_origins[]');
      if (s !== '*' && !/^https?:\/\/[^/\s]+$/.test(s)) throw new KkError('CONFIG_INVALID', `cors_origins: ${JSON.stringify(s)} is not an origin (scheme://host[:port], no path)`);
      return s;
    });
  },
  webhooks: (c, v) => {
    if (!Array.isArray(v)) throw new KkError('CONFIG_INVALID', 'webhooks must be a list');
    c.webhooks = v.map(webhookFromYaml);
  },
};

/** Keys of the file that `kk serve` reads itself rather than the server. */
const SERVE_KEYS = new Set(['store', 'listen']);

export interface ServerConfigFile {
  config: Partial<ServerConfig>;
  store?: string;
  listen?: string;
}

export async function loadServerConfig(path: string): Promise<ServerConfigFile> {
  const abs = resolve(path);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (err) {
    throw new KkError('CONFIG_INVALID', `cannot read server config ${abs}: ${(err as Error).message}`, { cause: err });
  }
  return parseServerConfig(text, abs);
}

export function parseServerConfig(text: string, where = 'server config'): ServerConfigFile {
  let raw: unknown;
  try {
    raw = parseYaml(text) ?? {};
  } catch (cause) {
    throw new KkError('CONFIG_INVALID', `${where} is not valid YAML: ${(cause as Error).message}`, { cause });
  }
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new KkError('CONFIG_INVALID', `${where}: the top level must be a mapping`);
  const out: ServerConfigFile = { config: {} };
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (SERVE_KEYS.has(k)) {
      out[k as 'store' | 'listen'] = str(v, k);
      continue;
    }
    const set = FILE_KEYS[k];
    if (!set) throw new KkError('CONFIG_INVALID', `${where}: unknown key "${k}" (known: ${[...SERVE_KEYS, ...Object.keys(FILE_KEYS)].join(', ')})`);
    set(out.config, v);
  }
  return out;
}

function webhookFromYaml(v: unknown): WebhookConfig {
  const o = (v ?? {}) as Record<string, unknown>;
  const events = o.events ?? (o.event === undefined ? ['*'] : [o.event]);
  const w: WebhookConfig = {
    name: str(o.name, 'webhooks[].name'),
    url: str(o.url, 'webhooks[].url'),
    events: Array.isArray(events) ? events.map((e) => str(e, 'webhooks[].events')) : [str(events, 'webhooks[].events')],
  };
  if (o.secret !== undefined) w.secret = str(o.secret, 'webhooks[].secret');
  if (o.project !== undefined) w.project = str(o.project, 'webhooks[].project');
  if (o.app !== undefined) w.app = str(o.app, 'webhooks[].app');
  checkWebhookConfig(w);
  return w;
}

// The event types and the url/events checks are the control plane's (one list for both).
export { EVENT_TYPES, type EventType } from '@kk/control';

export function checkWebhookConfig(w: WebhookConfig): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(w.name)) {
    throw new KkError('CONFIG_INVALID', `webhook name ${JSON.stringify(w.name)}: use letters, digits, ".", "_" or "-"`);
  }
  checkWebhookUrl(w.url);
  checkEvents(w.events);
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length === 0) throw new KkError('CONFIG_INVALID', `${what} must be a non-empty string`);
  return v;
}

function int(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new KkError('CONFIG_INVALID', `${what} must be an integer >= 1`);
  return v;
}
