// Small shared helpers of the control package.
import { randomBytes } from 'node:crypto';

/** The event types webhooks subscribe to (seed 9). */
export const EVENT_TYPES = ['push', 'pull', 'promote', 'rollback', 'delete'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** A time-ordered id body: base-36 ms + 8 random hex digits. */
export const timeId = (ms = Date.now()) => `${ms.toString(36).padStart(9, '0')}-${randomBytes(4).toString('hex')}`;

export function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
