// The control database's tables as Kysely sees them. Times are ISO-8601 UTC strings (they sort
// as text); `*_ms` columns are epoch milliseconds for the columns that claims and leases compare.
// JSON-valued columns are TEXT holding JSON (one representation on both dialects). Booleans are
// 0/1 integers, for the same reason.
import type { Generated } from 'kysely';

export interface SchemaTable {
  version: number;
  name: string;
  applied: string;
}

export interface TokensTable {
  id: string;
  name: string;
  /** `sha256:<hex>` of the secret part; never the secret. */
  hash: string;
  scope: string;
  /** JSON array of permissions. */
  permissions: string;
  created: string;
  expires: string | null;
  revoked: string | null;
  created_by: string;
  /** When the token last authenticated a request (to the minute; migration 6). */
  last_used?: string | null;
}

export interface WebhooksTable {
  id: string;
  name: string;
  url: string;
  /** JSON array of event types (`*` for all). */
  events: string;
  secret: string;
  project: string | null;
  app: string | null;
  active: number;
  source: string;
  created: string;
  updated: string;
}

export interface EventsTable {
  seq: Generated<number>;
  id: string;
  type: string;
  time: string;
  project: string | null;
  app: string | null;
  version: string | null;
  /** The whole event as JSON (what webhooks receive, byte for byte). */
  body: string;
}

export interface DeliveriesTable {
  /** Insertion order: the delivery log's sort key. */
  n: Generated<number>;
  id: string;
  webhook: string;
  event_seq: number | null;
  event_id: string;
  event: string;
  body: string;
  state: string;
  /** JSON array of attempts. */
  attempts: string;
  created: string;
  updated: string;
  next_attempt: string | null;
  /** When pending: due time in ms; null once delivered or failed (the outbox is `due_ms IS NOT NULL`). */
  due_ms: number | null;
  /** The instance sending it right now and until when that claim holds. */
  claim_owner: string | null;
  claim_until_ms: number | null;
}

export interface AuditTable {
  seq: Generated<number>;
  id: string;
  time: string;
  action: string;
  project: string | null;
  app: string | null;
  version: string | null;
  manifest: string | null;
  channel: string | null;
  token: string;
  agent: string | null;
  address: string | null;
  /** JSON object or null. */
  details: string | null;
}

export interface UploadSessionsTable {
  id: string;
  project: string;
  app: string;
  version: string;
  token: string;
  created: string;
  expires: string;
  expires_ms: number;
  builder: string | null;
  git_commit: string | null;
  meta: string | null;
  /** JSON array of declared files. */
  declared: string;
  /** JSON of what the finish produced; null while open. */
  finished: string | null;
  finished_ms: number | null;
}

export interface UploadFilesTable {
  session: string;
  path: string;
  /** The FileEntry as JSON. */
  entry: string;
}

export interface LeasesTable {
  name: string;
  owner: string;
  expires_ms: number;
  acquired: string;
}

export interface JobRunsTable {
  job: string;
  slot: string;
  owner: string;
  state: string;
  lease_until_ms: number;
  started: string;
  finished: string | null;
  attempts: number;
}

export interface SettingsTable {
  key: string;
  value: string;
  updated: string;
}

export interface Database {
  kk_schema: SchemaTable;
  tokens: TokensTable;
  webhooks: WebhooksTable;
  events: EventsTable;
  deliveries: DeliveriesTable;
  audit: AuditTable;
  upload_sessions: UploadSessionsTable;
  upload_files: UploadFilesTable;
  leases: LeasesTable;
  job_runs: JobRunsTable;
  settings: SettingsTable;
}
