// The fleet's state machines as data: one table of allowed transitions per entity, and one
// function, `transition`, through which every state change goes. It updates the row only if it is
// still in the expected state (so a lost race changes nothing and says so), records a node's
// status history, and appends the change to the events table in the same transaction.
import type { Kysely, Transaction } from 'kysely';
import type { Executor } from '../db.js';
import type { Events } from '../events.js';
import type { FleetDatabase } from './schema.js';

export type FleetExecutor = Kysely<FleetDatabase> | Transaction<FleetDatabase>;

export const TASK_STATES = ['PENDING', 'RUNNING', 'RETRYING', 'SUCCESS', 'FAILED', 'CANCELED'] as const;
export type TaskState = (typeof TASK_STATES)[number];
export const NODE_STATUSES = ['ONLINE', 'DEGRADED', 'OFFLINE'] as const;
export type NodeStatus = (typeof NODE_STATUSES)[number];
export type TargetState = 'running' | 'paused';
export type ProjectSyncState = 'OK' | 'SYNC_DEGRADED';

export const TASK_TRANSITIONS: Record<TaskState, readonly TaskState[]> = {
  PENDING: ['RUNNING', 'CANCELED'],
  RETRYING: ['RUNNING', 'CANCELED'],
  RUNNING: ['SUCCESS', 'FAILED', 'RETRYING', 'CANCELED'],
  FAILED: ['PENDING'],
  CANCELED: ['PENDING'],
  SUCCESS: [],
};

export const NODE_TRANSITIONS: Record<NodeStatus, readonly NodeStatus[]> = {
  ONLINE: ['DEGRADED', 'OFFLINE'],
  DEGRADED: ['ONLINE', 'OFFLINE'],
  OFFLINE: ['ONLINE', 'DEGRADED'],
};

export const TARGET_TRANSITIONS: Record<TargetState, readonly TargetState[]> = {
  running: ['paused'],
  paused: ['running'],
};

export const PROJECT_TRANSITIONS: Record<ProjectSyncState, readonly ProjectSyncState[]> = {
  OK: ['SYNC_DEGRADED'],
  SYNC_DEGRADED: ['OK'],
};

/** Event type of each transition (what `kk watch` and webhooks see). */
const TASK_EVENTS: Record<TaskState, string> = {
  PENDING: 'task.queued',
  RUNNING: 'task.running',
  RETRYING: 'task.retrying',
  SUCCESS: 'task.succeeded',
  FAILED: 'task.failed',
  CANCELED: 'task.canceled',
};

type Change =
  | { entity: 'task'; id: string; from: TaskState; to: TaskState; set?: Partial<FleetDatabase['tasks']> }
  | { entity: 'node'; id: string; from: NodeStatus; to: NodeStatus; reason: string; set?: Partial<FleetDatabase['nodes']> }
  | { entity: 'target'; id: string; from: TargetState; to: TargetState; set: Partial<FleetDatabase['targets']> }
  | { entity: 'project'; id: string; from: ProjectSyncState; to: ProjectSyncState; set: Partial<FleetDatabase['fleet_projects']> };

export interface EventContext {
  /** Who caused it: a token id, `node:<id>` or `system`. */
  by: string;
  project?: string;
  app?: string;
  version?: string;
  details?: Record<string, unknown>;
  time?: string;
}

export function allowed(c: Pick<Change, 'entity' | 'from' | 'to'>): boolean {
  const table = { task: TASK_TRANSITIONS, node: NODE_TRANSITIONS, target: TARGET_TRANSITIONS, project: PROJECT_TRANSITIONS }[c.entity] as Record<string, readonly string[]>;
  return table[c.from]?.includes(c.to) ?? false;
}

/**
 * Apply one transition inside `tx`. False (nothing written) when the row is no longer in `from`:
 * someone else moved it first. A transition the tables do not allow is a programming error.
 */
export async function transition(tx: FleetExecutor, events: Events, c: Change, ev: EventContext): Promise<boolean> {
  if (!allowed(c)) throw new TypeError(`${c.entity} ${c.id}: ${c.from} -> ${c.to} is not an allowed transition`);
  const time = ev.time ?? new Date().toISOString();
  let type: string;
  let n: bigint;
  switch (c.entity) {
    case 'task': {
      const r = await tx.updateTable('tasks').set({ ...c.set, state: c.to, updated: time }).where('id', '=', c.id).where('state', '=', c.from).executeTakeFirst();
      n = r.numUpdatedRows;
      type = TASK_EVENTS[c.to];
      break;
    }
    case 'node': {
      const r = await tx
        .updateTable('nodes')
        .set({ ...c.set, status: c.to, status_reason: c.reason, status_since: time, updated: time })
        .where('id', '=', c.id)
        .where('status', '=', c.from)
        .executeTakeFirst();
      n = r.numUpdatedRows;
      if (n > 0n) await tx.insertInto('node_status_history').values({ node: c.id, time, from_status: c.from, to_status: c.to, reason: c.reason }).execute();
      type = `node.${c.to.toLowerCase()}`;
      break;
    }
    case 'target': {
      let q = tx.updateTable('targets').set({ ...c.set, updated: time }).where('id', '=', c.id);
      q = c.from === 'paused' ? q.where('paused_reason', 'is not', null) : q.where('paused_reason', 'is', null);
      n = (await q.executeTakeFirst()).numUpdatedRows;
      type = c.to === 'paused' ? 'target.paused' : 'target.resumed';
      break;
    }
    case 'project': {
      const r = await tx
        .updateTable('fleet_projects')
        .set({ ...c.set, sync_degraded: c.to === 'SYNC_DEGRADED' ? 1 : 0, updated: time })
        .where('project', '=', c.id)
        .where('sync_degraded', '=', c.from === 'SYNC_DEGRADED' ? 1 : 0)
        .executeTakeFirst();
      n = r.numUpdatedRows;
      type = c.to === 'SYNC_DEGRADED' ? 'sync.degraded' : 'sync.recovered';
      break;
    }
  }
  if (n === 0n) return false;
  await events.append(tx as unknown as Executor, {
    type,
    time,
    ...(ev.project ? { project: ev.project } : {}),
    ...(ev.app ? { app: ev.app } : {}),
    ...(ev.version ? { version: ev.version } : {}),
    actor: { token: ev.by },
    details: { [c.entity]: c.id, from: c.from, to: c.to, ...(c.entity === 'node' ? { reason: c.reason } : {}), ...ev.details },
  });
  return true;
}
