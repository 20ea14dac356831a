// @kk/control: the control plane's state and rules (DESIGN 12). No HTTP code: the server calls it.
export { Control, type ActivityInput, type ControlOptions } from './control.js';
export { ControlDb, parseDbUrl, type ControlDbTarget, type DialectName, type Executor, type OpenOptions } from './db.js';
export { MIGRATIONS, SCHEMA_VERSION, currentVersion, migrate, type MigrateResult, type Migration } from './migrations.js';
export type { Database } from './schema.js';
export * from './tokens.js';
export * from './webhooks.js';
export { Events, eventFromRow, isWebhookEvent, type AppendResult, type EventInput, type KkEvent, type StoredEvent } from './events.js';
export { EVENT_TYPES, type EventType, timeId } from './util.js';
export { AuditLog, type AuditEntry, type AuditFilter, type AuditPage, type AuditResult } from './audit.js';
export { Uploads, type DeclaredFile, type FinishedUpload, type UploadSession } from './uploads.js';
export { Leases, type JobRun, type Lease } from './leases.js';
export { Settings } from './settings.js';
export { IMPORT_MARKER, importStoreState, type ImportResult } from './import.js';
export * from './fleet/index.js';
export * from './deploys/index.js';
