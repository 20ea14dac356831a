// @kk/server: the kk HTTP server over any store (DESIGN 9).
export { EVENT_STREAM_PATH, EVENT_STREAM_PROTOCOL, EVENT_STREAM_TOKEN_PREFIX, STREAM_CLOSE, type EventStream, type EventStreamOptions } from './ws.js';
export { createKkServer, startServer, defaultDbUrl, KkServer, type KkServerOptions, type StartServerOptions, type RunningServer } from './server.js';
export type { Call, ServerContext, RouteEntry, Handler } from './context.js';
export {
  type ServerConfig,
  type WebhookConfig,
  type ServerConfigFile,
  DEFAULT_CONFIG,
  DEFAULT_RETENTION_SCHEDULE,
  EVENT_TYPES,
  resolveConfig,
  loadServerConfig,
  parseServerConfig,
  parseDuration,
} from './config.js';
export { signBody, SIGNATURE_HEADER, type Webhook, type KkEvent, type Delivery, type DeliveryAttempt } from './webhooks.js';
export { PERMISSIONS, parseScope, formatScope, parsePermissions, type Permission, type Scope, type TokenRecord, type Principal } from './tokens.js';
export { RetentionScheduler, type RetentionRun } from './retention.js';
export { type AuditEntry } from './audit.js';
export { createLogger, type LogSink, type LogLevel } from './log.js';
export { KkServerClient, type AuditQuery, type CreateTokenRequest, type PublicToken } from './client.js';
