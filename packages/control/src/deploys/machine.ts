// The deploy state machine as data (seed 003 statuses): which status may follow which. Every
// change goes through `transitionDeploy`, which updates the row only if it is still in the
// expected status, appends the status history and a `deploy.<status>` event in one transaction.
import { DEPLOY_FINAL_STATUSES, DEPLOY_STATUSES, type DeployStatus, type DeployType } from '@kk/core';
import type { Kysely, Transaction } from 'kysely';
import type { Events } from '../events.js';
import type { DeploysDatabase } from './schema.js';

export { DEPLOY_STATUSES, type DeployStatus, type DeployType };

/** The work stages of the kinds (they may follow each other in any order: kk runs hooks between). */
const WORK: DeployStatus[] = ['executing', 'script_running', 'uploading', 'extracting', 'installing', 'pulling', 'stopping', 'starting'];
/** Statuses a deploy ends in. failed and timeout end it only when no rollback follows. */
export const FINAL_STATUSES = DEPLOY_FINAL_STATUSES;

export const DEPLOY_TRANSITIONS: Record<DeployStatus, readonly DeployStatus[]> = Object.fromEntries(
  DEPLOY_STATUSES.map((s) => {
    let next: DeployStatus[];
    if (s === 'pending') next = [...WORK, 'health_check', 'failed', 'timeout', 'rolling_back'];
    else if (WORK.includes(s)) next = [...WORK.filter((w) => w !== s), 'health_check', 'success', 'failed', 'timeout', 'rolling_back', 'rolled_back', 'rollback_failed'];
    else if (s === 'health_check') next = ['success', 'failed', 'timeout', 'rolling_back', 'rolled_back', 'rollback_failed'];
    else if (s === 'failed' || s === 'timeout') next = ['rolling_back', 'rolled_back', 'rollback_failed'];
    else if (s === 'rolling_back') next = ['health_check', 'rolled_back', 'rollback_failed', 'timeout'];
    else next = [];
    return [s, next];
  }),
) as unknown as Record<DeployStatus, readonly DeployStatus[]>;

export type DeployExecutor = Kysely<DeploysDatabase> | Transaction<DeploysDatabase>;

export interface DeployChange {
  id: string;
  from: DeployStatus;
  to: DeployStatus;
  progress: number;
  message: string;
  /** Still active afterwards (default: unless `to` is final). */
  active?: boolean;
  set?: Partial<DeploysDatabase['deploys']>;
}

export function deployAllowed(from: DeployStatus, to: DeployStatus): boolean {
  return from === to || (DEPLOY_TRANSITIONS[from]?.includes(to) ?? false);
}

/**
 * Apply one transition inside `tx`. False (nothing written) when the deploy is no longer in
 * `from` or no longer active. A transition the table does not allow is a programming error.
 */
export async function transitionDeploy(tx: DeployExecutor, events: Events, c: DeployChange, by: string, time = new Date().toISOString()): Promise<boolean> {
  if (!deployAllowed(c.from, c.to)) throw new TypeError(`deploy ${c.id}: ${c.from} -> ${c.to} is not an allowed transition`);
  const active = c.active ?? !FINAL_STATUSES.includes(c.to);
  const r = await tx
    .updateTable('deploys')
    .set({ ...c.set, status: c.to, progress: c.progress, stage: c.to, message: c.message, active: active ? 1 : 0, updated: time, ...(active ? {} : { finished: time }) })
    .where('id', '=', c.id)
    .where('status', '=', c.from)
    .where('active', '=', 1)
    .executeTakeFirst();
  if (r.numUpdatedRows === 0n) return false;
  if (c.from !== c.to) await tx.insertInto('deploy_status_history').values({ deploy: c.id, time, from_status: c.from, to_status: c.to, progress: c.progress, message: c.message }).execute();
  const row = await tx.selectFrom('deploys').select(['node', 'deploy_type', 'command_type', 'version']).where('id', '=', c.id).executeTakeFirstOrThrow();
  await events.append(tx as never, {
    type: c.from === c.to && !active ? 'deploy.finished' : `deploy.${c.to}`,
    time,
    actor: { token: by },
    details: { deploy: c.id, node: row.node, deploy_type: row.deploy_type, command_type: row.command_type, from: c.from, to: c.to, progress: c.progress, message: c.message, ...(row.version ? { version: row.version } : {}) },
  });
  return true;
}
