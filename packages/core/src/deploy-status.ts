// The deploy center's status names (seed 003, deploy-02), shared by the agent that runs deploys
// (@kk/agent) and the control plane that records them (@kk/control): one list, one spelling.

export const DEPLOY_STATUSES = [
  'pending',
  'executing',
  'script_running',
  'health_check',
  'uploading',
  'extracting',
  'installing',
  'pulling',
  'stopping',
  'starting',
  'success',
  'failed',
  'timeout',
  'rolling_back',
  'rolled_back',
  'rollback_failed',
] as const;
export type DeployStatus = (typeof DEPLOY_STATUSES)[number];

export const DEPLOY_TYPES = ['kk', 'shell', 'tar', 'docker'] as const;
export type DeployType = (typeof DEPLOY_TYPES)[number];

/** Statuses a deploy record ends in (failed and timeout end it only when no rollback follows). */
export const DEPLOY_FINAL_STATUSES: readonly DeployStatus[] = ['success', 'rolled_back', 'rollback_failed'];

/**
 * The events a deploy appends (and webhooks may subscribe to): `deploy.<status>` for every
 * status change, and `deploy.finished` for a final outcome that did not change the status.
 */
export const DEPLOY_EVENT_TYPES = [...DEPLOY_STATUSES.map((s) => `deploy.${s}` as const), 'deploy.finished'] as const;
export type DeployEventType = (typeof DEPLOY_EVENT_TYPES)[number];
