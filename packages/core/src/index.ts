// @kk/core: the embeddable library. No network, no CLI: drivers are passed in.
export * from './errors.js';
export * from './names.js';
export * from './digest.js';
export * from './paths.js';
export * from './chunking.js';
export * from './manifest.js';
export * from './driver.js';
export * from './store.js';
export * from './pack.js';
export { createMemoryDriver, type MemoryDriverOptions } from './drivers/memory.js';
export { withRetry, withConcurrencyLimit, withRateLimit, withFallback, isOutage, type RetryOptions, type FallbackEvent } from './drivers/wrappers.js';
export { createHasher, BytesCounter, type Hasher, type HasherOptions, type FileHashResult } from './hash/pool.js';
export { type CompressionPolicy, DEFAULT_COMPRESSION, ENCODING_RAW, ENCODING_BROTLI } from './hash/codec.js';
export * from './config.js';
export * from './scan.js';
export * from './progress.js';
export * from './state.js';
export * from './statcache.js';
export { acquirePushLease, acquireGcLock, GC_LOCK_KEY, type LockTimings, type Lease, type GcLock } from './locks.js';
export * from './push.js';
export * from './retention.js';
export * from './gc.js';
export * from './fsck.js';
export { agentId } from './agent-id.js';
export * from './diff.js';
export {
  pull,
  diff,
  rollback,
  targetStatus,
  IN_TARGET_STAGING,
  PULL_MODES,
  DEFAULT_PULL_MAX_DEPTH,
  type PullMode,
  type PullOptions,
  type PullResult,
  type RollbackOptions,
  type StoreSource,
} from './apply/pull.js';
export { pauseLocal, resumeLocal, readLocalPause, assertNotPaused, type LocalPause } from './apply/pause.js';
export { type ApplyPlan, type PlanSummary, type LocalChange } from './apply/plan.js';
export { TargetState, type AppliedVersion, type TargetStateFile } from './apply/target-state.js';
export { verifyTarget, type VerifyResult, type VerifyProblem } from './apply/verify.js';
export * from './copy.js';
export * from './durability.js';
export * from './deploy-status.js';
