// The one list of kk error codes. Codes are stable API: tools that embed @kk/core and the CLI's
// exit codes depend on them. Programmer mistakes are plain TypeErrors, not KkErrors.

export const ERROR_CODES = {
  CONFIG_MISSING: 'the .kkartifact.yml file does not exist',
  CONFIG_INVALID: 'the configuration file is malformed or has a bad value',
  INVALID_NAME: 'a project, app, version or channel name is not allowed',
  UNSAFE_PATH: 'a path would escape its root or is not normalized',
  SOURCE_INVALID: 'the directory to push holds something kk refuses (symlink, device, too deep)',
  VERSION_EXISTS: 'the version already exists with different content',
  NOT_FOUND: 'the project, app, version, channel or object does not exist',
  CHUNK_CORRUPT: 'stored bytes do not match their digest or cannot be decoded',
  MANIFEST_INVALID: 'a manifest does not pass validation',
  STORE_INVALID: 'the store is not a kk store or has an incompatible format',
  TARGET_NOT_MANAGED: 'the deploy directory is not empty and kk has never managed it',
  TARGET_CONFLICT: 'the deploy directory cannot be mirrored as planned (ignored content in the way)',
  MAX_DELETE: 'the apply would delete more files than allowed',
  NOTHING_TO_ROLLBACK: 'there is no earlier version to roll back to',
  LOCKED: 'another process holds the lock',
  AUTH: 'authentication failed',
  FORBIDDEN: 'the credentials do not allow this operation',
  BACKEND: 'the storage backend failed or is unreachable',
  DISK_FULL: 'a file system or store ran out of space; nothing was changed',
  PAUSED: 'the deploy directory or target is paused; nothing is applied until it is resumed',
} as const;

export type KkErrorCode = keyof typeof ERROR_CODES;

export interface KkErrorOptions {
  cause?: unknown;
  /** One line telling the user what to do next. */
  hint?: string;
  /** Structured context (path, key, digest...) for --json output. */
  details?: Record<string, unknown>;
}

export class KkError extends Error {
  readonly code: KkErrorCode;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: KkErrorCode, message: string, options: KkErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KkError';
    this.code = code;
    this.hint = options.hint;
    this.details = options.details;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, hint: this.hint, details: this.details };
  }
}

export function isKkError(err: unknown, code?: KkErrorCode): err is KkError {
  return err instanceof KkError && (code === undefined || err.code === code);
}

/** Errors worth retrying: backend trouble, never a logical refusal. */
export function isTransient(err: unknown): boolean {
  if (err instanceof KkError) return err.code === 'BACKEND';
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ECONNRESET' || code === 'ETIMEDOUT' || code === 'EAI_AGAIN' || code === 'EPIPE';
}
