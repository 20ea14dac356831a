// Retry policy of sync tasks (DESIGN 13): exponential backoff with jitter, 5 s doubling to 3 min,
// 5 attempts by default, and which failure codes are worth another attempt.

export interface TaskRetryPolicy {
  maxAttempts: number;
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_TASK_RETRY: TaskRetryPolicy = { maxAttempts: 5, baseMs: 5_000, maxMs: 180_000 };

/**
 * Delay before attempt `attempt + 1` after `attempt` failed ones (1-based): base * 2^(attempt-1),
 * capped, then "equal jitter": half fixed, half random, so a fleet that failed together does not
 * retry together, and no delay falls below half the nominal one.
 */
export function taskBackoffMs(attempt: number, p: Pick<TaskRetryPolicy, 'baseMs' | 'maxMs'>, random = Math.random): number {
  const nominal = Math.min(p.maxMs, p.baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(nominal / 2 + (random() * nominal) / 2);
}

/**
 * Codes that another attempt cannot fix: the request, the target or the version is wrong and a
 * person must act. Everything else (BACKEND, DISK_FULL, LOCKED, LEASE_EXPIRED, CHUNK_CORRUPT,
 * unknown codes) is retried.
 */
export const NON_RETRYABLE_CODES: ReadonlySet<string> = new Set([
  'CONFIG_INVALID',
  'CONFIG_MISSING',
  'INVALID_NAME',
  'UNSAFE_PATH',
  'NOT_FOUND',
  'MANIFEST_INVALID',
  'STORE_INVALID',
  'TARGET_NOT_MANAGED',
  'TARGET_CONFLICT',
  'MAX_DELETE',
  'AUTH',
  'FORBIDDEN',
  'PAUSED',
  'PATH_NOT_ALLOWED',
  'CONFLICT',
  'VERIFY_TIMEOUT',
]);

export function isRetryable(code: string): boolean {
  return !NON_RETRYABLE_CODES.has(code);
}
