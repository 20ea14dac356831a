// The deploy API (DESIGN 14, routes/deploy.ts): deploys per node, one deploy with its status
// history and log. `undefined` from `deploysOf` means this server has no deploy API.
import { ApiError, enc, get } from './api.js';

export interface DeployRecord {
  id: string;
  node: string;
  target: string;
  deploy_type: string;
  command_type: string;
  status: string;
  active: boolean;
  progress: number;
  stage: string;
  message: string;
  spec: Record<string, unknown>;
  version?: string;
  rollback_of?: string;
  result?: Record<string, unknown>;
  error?: string;
  error_code?: string;
  created_by: string;
  created: string;
  updated: string;
  finished?: string;
}

export interface StatusEntry {
  time: string;
  from_status: string | null;
  status: string;
  progress: number;
  message: string;
}

export async function deploysOf(node: string, limit = 20): Promise<DeployRecord[] | undefined> {
  try {
    const r = await get<{ items: DeployRecord[] }>(`/api/deploy/${enc(node)}/list`, { limit });
    return r.items;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && /no route/.test(err.message)) return undefined;
    throw err;
  }
}

export function statusClass(s: string): string {
  if (s === 'success') return 'ok';
  if (s === 'failed' || s === 'timeout' || s === 'rollback_failed') return 'bad';
  if (s === 'rolled_back') return 'warn';
  return 'run';
}
