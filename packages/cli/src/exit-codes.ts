// The documented exit codes of kk (README "Exit codes") and the one map from error to code.
import { type KkErrorCode, isKkError } from '@kk/core';

export const EXIT = {
  /** Success; for `kk diff`, nothing to do. */
  OK: 0,
  /** An error (store unreachable, not found, a safety rail refused); for `kk diff`, there are changes. */
  ERROR: 1,
  /** Bad usage or configuration: unknown flag, missing or malformed config, invalid name. */
  USAGE: 2,
  /** Integrity: a corrupt chunk, an unsafe path, an invalid manifest, a verify mismatch. */
  INTEGRITY: 3,
  /** Conflict: the version exists with other content, another process holds the apply lock, or the directory is paused. */
  CONFLICT: 4,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Codes not listed here exit with EXIT.ERROR. */
const EXIT_BY_CODE: Partial<Record<KkErrorCode, ExitCode>> = {
  CONFIG_MISSING: EXIT.USAGE,
  CONFIG_INVALID: EXIT.USAGE,
  INVALID_NAME: EXIT.USAGE,
  CHUNK_CORRUPT: EXIT.INTEGRITY,
  UNSAFE_PATH: EXIT.INTEGRITY,
  MANIFEST_INVALID: EXIT.INTEGRITY,
  VERSION_EXISTS: EXIT.CONFLICT,
  LOCKED: EXIT.CONFLICT,
  PAUSED: EXIT.CONFLICT,
};

/** What the CLI reports for a failure: stable code, exit code, message, next step. */
export interface FailureReport {
  code: string;
  exitCode: ExitCode;
  message: string;
  hint?: string;
  details?: Record<string, unknown>;
}

/** oclif's parse and command-lookup errors carry `oclif.exit` (2 for usage mistakes). */
interface OclifError extends Error {
  oclif?: { exit?: number };
}

export function describeFailure(err: unknown): FailureReport {
  if (isKkError(err)) {
    const report: FailureReport = { code: err.code, exitCode: EXIT_BY_CODE[err.code] ?? EXIT.ERROR, message: err.message };
    if (err.hint) report.hint = err.hint;
    if (err.details) report.details = err.details;
    return report;
  }
  const e = err as OclifError;
  if (e?.oclif?.exit === EXIT.USAGE) {
    // oclif says "The following error occurred:\n  Missing required flag x\nSee more help with --help".
    const lines = e.message.split('\n').map((l) => l.trim()).filter((l) => l && !/^The following errors? occurred:?$/.test(l));
    const help = lines.filter((l) => /^See more help with/.test(l));
    const message = lines.filter((l) => !help.includes(l)).join('; ') || 'invalid usage';
    return { code: 'USAGE', exitCode: EXIT.USAGE, message, hint: help[0] ?? 'see --help' };
  }
  const message = e instanceof Error ? e.message : String(err);
  return { code: 'ERROR', exitCode: EXIT.ERROR, message, hint: 'run again with --verbose for details' };
}
