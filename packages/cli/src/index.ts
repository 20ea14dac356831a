// The kk CLI as a library for command authors: the base command, the shared flags, the exit
// codes and the store helper. The commands themselves live in ./commands (one file each).
export { KkCommand, openStoreAt, writeJson, type KkArgs, type KkFlags, type Outcome, type StoreLocation } from './base.js';
export * from './flags.js';
export { EXIT, describeFailure, type ExitCode, type FailureReport } from './exit-codes.js';
export { createProgress, describeProgress, lineProgress, type ProgressDisplay, type ProgressMode } from './progress.js';
export * from './format.js';
