// The audit log (seed 11, DESIGN 9): rows of the control database (@kk/control), indexed by time,
// project/app, action, token and agent; filtered in SQL, paged by offset or cursor.
export { AuditLog, type AuditEntry, type AuditFilter, type AuditPage, type AuditResult } from '@kk/control';
