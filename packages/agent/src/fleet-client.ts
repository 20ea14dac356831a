// The fleet API for people and tools (the CLI's `kk node`, `kk target`, `kk sync`, `kk pause`):
// one method per route of the server's /api/sync, with a kk token.
import { request } from './api.js';

type J = Record<string, any>;

export class FleetClient {
  constructor(
    private readonly server: string,
    private readonly token: string | undefined,
  ) {}

  private async call<T = J>(method: string, path: string, body?: unknown): Promise<T> {
    return (await request(this.server, method, `api/sync/${path}`, body, this.token)).json as T;
  }

  createRegistrationToken(b: { name?: string; expires?: string; tags?: Record<string, string> }) {
    return this.call<{ token: string; id: string; expires: string | null }>('POST', 'registration-tokens', b);
  }
  nodes(filter: { tags?: Record<string, string>; status?: string } = {}) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter.tags ?? {})) q.append('tag', `${k}=${v}`);
    if (filter.status) q.set('status', filter.status);
    return this.call<{ items: J[]; seq: number }>('GET', `nodes${q.size ? `?${q}` : ''}`);
  }
  node(id: string) {
    return this.call('GET', `nodes/${encodeURIComponent(id)}`);
  }
  patchNode(id: string, b: J) {
    return this.call('PATCH', `nodes/${encodeURIComponent(id)}`, b);
  }
  removeNode(id: string, force = false) {
    return this.call('DELETE', `nodes/${encodeURIComponent(id)}${force ? '?force=1' : ''}`);
  }
  testNode(id: string) {
    return this.call('POST', `nodes/${encodeURIComponent(id)}/test`, {});
  }
  targets(filter: { project?: string; app?: string; node?: string } = {}) {
    const q = new URLSearchParams(Object.entries(filter).filter(([, v]) => v) as [string, string][]);
    return this.call<{ items: J[]; seq: number }>('GET', `targets${q.size ? `?${q}` : ''}`);
  }
  /** The YAML target config (server-side checked: each problem names its line). */
  applyTargets(document: string, opts: { source?: string; dryRun?: boolean; prune?: boolean } = {}) {
    const q = new URLSearchParams();
    if (opts.dryRun) q.set('dry_run', '1');
    if (opts.prune) q.set('prune', '1');
    return this.call('POST', `targets/apply${q.size ? `?${q}` : ''}`, { document, ...(opts.source ? { source: opts.source } : {}) });
  }
  addTarget(b: J) {
    return this.call('POST', 'targets', b);
  }
  targetStatus(id: string) {
    return this.call('GET', `targets/${encodeURIComponent(id)}`);
  }
  removeTarget(id: string) {
    return this.call('DELETE', `targets/${encodeURIComponent(id)}`);
  }
  pause(id: string, b: { reason: string; until?: string }) {
    return this.call('POST', `targets/${encodeURIComponent(id)}/pause`, b);
  }
  verify(id: string) {
    return this.call('POST', `targets/${encodeURIComponent(id)}/verify`, {});
  }
  resume(id: string) {
    return this.call('POST', `targets/${encodeURIComponent(id)}/resume`, {});
  }
  sync(b: { target?: string; project?: string; app?: string; node?: string; version?: string }) {
    return this.call<{ items: J[] }>('POST', 'sync', b);
  }
  tasks(filter: { project?: string; node?: string; status?: string; target?: string; cursor?: string; limit?: number } = {}) {
    const q = new URLSearchParams(Object.entries(filter).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)] as [string, string]));
    return this.call<{ items: J[]; next: string | null; seq: number }>('GET', `tasks${q.size ? `?${q}` : ''}`);
  }
  task(id: string) {
    return this.call('GET', `tasks/${encodeURIComponent(id)}`);
  }
  cancel(id: string, reason?: string) {
    return this.call('POST', `tasks/${encodeURIComponent(id)}/cancel`, reason ? { reason } : {});
  }
  retry(id: string) {
    return this.call('POST', `tasks/${encodeURIComponent(id)}/retry`, {});
  }
  project(name: string) {
    return this.call('GET', `projects/${encodeURIComponent(name)}`);
  }
  setProject(name: string, b: J) {
    return this.call('PUT', `projects/${encodeURIComponent(name)}`, b);
  }
}
