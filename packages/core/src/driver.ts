// The driver contract (DESIGN 5): a narrow key-value interface split by capability. Drivers do
// the minimum; the core Store validates names and digests, verifies bytes and maps errors.
// Keys are `/`-separated paths from DESIGN 3 (`chunks/ab/ab12...`, `refs/p/a/v`...): segments
// of `[A-Za-z0-9._+-]`, never empty, `.`/`..`, or starting with `.tmp-`. The Store only builds
// such keys; drivers may reject others with a TypeError. A key is never also the prefix of
// another key (`a` and `a/b` never coexist), so file-system backends can map keys to paths.

export interface DriverCapabilities {
  /** `get` serves a byte range without transferring the whole object (every driver must honour ranges; this says it is cheap). */
  rangeReads: boolean;
  /** `putIfAbsent` is atomic: of two concurrent creators exactly one gets `true`. */
  atomicCreate: boolean;
  /** `list` and `listChildren` are supported. */
  listing: boolean;
  /** `delete` is supported (the driver is a PruneDriver). */
  deletion: boolean;
  /** `hasMany` is answered in few backend requests rather than one per key. */
  batchExists: boolean;
  /**
   * The backend cannot hold one object per chunk (an OCI registry, a tar archive): every chunk
   * goes into a pack (PACKS.md), `chunks/` keys are never written, and a store created on it
   * records the pack policy `all`. Absent: false.
   */
  packsOnly?: boolean;
}

export interface ObjectInfo {
  key: string;
  size: number;
  /** Last modification, integer ms since the epoch. Immutable objects: their creation time. */
  mtime: number;
}

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

export interface ReadDriver {
  /** Short scheme-like name for messages and metrics, e.g. `file`. */
  readonly name: string;
  readonly capabilities: DriverCapabilities;
  /**
   * The object's bytes, or the inclusive `range` of them: `end` past the object's end is
   * clamped, `start` past it yields an empty Buffer. Not found: resolves `undefined`, never
   * throws for absence.
   */
  get(key: string, range?: ByteRange): Promise<Buffer | undefined>;
  /** Size and mtime. Not found: `undefined`. */
  stat(key: string): Promise<ObjectInfo | undefined>;
  /** For each key, whether it exists, in the same order. */
  hasMany(keys: readonly string[]): Promise<boolean[]>;
  /**
   * Every object whose key starts with `prefix` (a prefix ending in `/` lists a "directory"
   * recursively), in no particular order. A missing prefix yields nothing.
   */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /**
   * Names of the immediate children under `prefix` (`''` for the root, otherwise ending in
   * `/`): sub-"directories" and objects alike, without the prefix, sorted, unique. A missing
   * prefix resolves `[]`. A "directory" whose last object was deleted may linger on backends
   * with real directories; callers tolerate empty children.
   */
  listChildren(prefix: string): Promise<string[]>;
  /** Release sockets, handles and processes. Idempotent; no other call may follow it. */
  close(): Promise<void>;
  /**
   * Tell a store that records events (the kk server) that a pull completed. Called once per
   * completed, non-dry-run pull (also when the directory already held the version). Plain
   * storage drivers omit it. Best effort: a failure never fails the pull.
   */
  recordPull?(event: PullRecord): Promise<void>;
}

/** A completed pull, as reported to stores that keep an audit log (issue 10 item 4). */
export interface PullRecord {
  project: string;
  app: string;
  version: string;
  /** `sha256:...` of the manifest applied. */
  manifest: string;
  /** The pulling machine: `<hostname>/<stable id kk generated in its state dir>`. */
  agent: string;
  /** The directory already held the version; nothing was written. */
  upToDate: boolean;
}

export interface WriteDriver extends ReadDriver {
  /** Create or replace the object atomically: readers see the old bytes or the new, never a mix. */
  put(key: string, data: Uint8Array): Promise<void>;
  /**
   * Create the object only if absent. Resolves `true` if this call created it, `false` if it
   * already existed (its bytes are left alone). Readers never see partial bytes. With
   * `capabilities.atomicCreate`, of concurrent creators exactly one gets `true`; without it,
   * two may both get `true` and the last write wins (callers compare contents afterwards).
   */
  putIfAbsent(key: string, data: Uint8Array): Promise<boolean>;
  /**
   * Make every write this instance completed so far durable (survive a power loss). Drivers
   * whose writes are durable when they resolve omit it. The Store calls it before a ref is
   * written and after, so a version never names chunks a crash could lose.
   */
  flush?(): Promise<void>;
}

export interface PruneDriver extends WriteDriver {
  /** Delete the object. Idempotent: deleting a missing key succeeds. */
  delete(key: string): Promise<void>;
  /**
   * Remove the driver's own temp files (never listed as objects) last modified more than
   * `olderThanMs` ago: what a writer killed mid-write left behind. With `dryRun`, count only.
   * Drivers without temp files omit it. GC calls it (issue 10 item 24).
   */
  sweepTemp?(opts: { olderThanMs: number; dryRun?: boolean }): Promise<{ files: number; bytes: number }>;
}

export type Driver = ReadDriver | WriteDriver | PruneDriver;

export function isWriteDriver(d: Driver): d is WriteDriver {
  return typeof (d as WriteDriver).put === 'function';
}

export function isPruneDriver(d: Driver): d is PruneDriver {
  return isWriteDriver(d) && typeof (d as PruneDriver).delete === 'function' && d.capabilities.deletion;
}
