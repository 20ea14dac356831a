// Small shared helpers of the control package.
import { randomBytes } from 'node:crypto';
import { DEPLOY_EVENT_TYPES } from '@kk/core';

/** The store's event types (seed 9): each is about one app, so it always names project and app. */
export const STORE_EVENT_TYPES = ['push', 'pull', 'promote', 'rollback', 'delete'] as const;

/**
 * Fleet events worth a webhook (DESIGN 13): a task failed for good, a target recovered after
 * failures, a project went SYNC_DEGRADED or recovered, a target paused or resumed, a verify found
 * a CONFLICT (alarm) or passed, a pull seen on a paused target (alarm), a node's liveness. The
 * others (task.queued, task.running...) are in the event stream only.
 */
export const FLEET_EVENT_TYPES = [
  'task.failed',
  'sync.target_recovered',
  'sync.degraded',
  'sync.recovered',
  'target.paused',
  'target.resumed',
  'sync.conflict',
  'sync.verified',
  'sync.paused_pull',
  'node.offline',
  'node.online',
  'node.degraded',
] as const;

/** The event types webhooks subscribe to: the store's, the fleet's and the deploys' (deploy.*). */
export const EVENT_TYPES = [...STORE_EVENT_TYPES, ...FLEET_EVENT_TYPES, ...DEPLOY_EVENT_TYPES] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** A time-ordered id body: base-36 ms + 8 random hex digits. */
export const timeId = (ms = Date.now()) => `${ms.toString(36).padStart(9, '0')}-${randomBytes(4).toString('hex')}`;

export function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
