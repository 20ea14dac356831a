// The docker monitor (seed deploy-26): for the containers kk deployed (label kk.deploy), their
// state (running/exited/paused), health as the engine reports it, and CPU/memory from one
// non-streaming stats sample, through the Engine API. The agent sends it on its interval.
import type { DockerEngine } from './docker.js';

export interface ContainerReport {
  name: string;
  id: string;
  image: string;
  state: string;
  /** The engine's health status when the image defines a HEALTHCHECK. */
  health?: string;
  cpu_percent?: number;
  memory_bytes?: number;
  memory_limit_bytes?: number;
  timestamp: string;
}

interface ListItem {
  Id: string;
  Names: string[];
  Image: string;
  State: string;
}

interface Stats {
  cpu_stats?: { cpu_usage?: { total_usage?: number }; system_cpu_usage?: number; online_cpus?: number };
  precpu_stats?: { cpu_usage?: { total_usage?: number }; system_cpu_usage?: number };
  memory_stats?: { usage?: number; limit?: number };
}

export async function monitorContainers(engine: DockerEngine): Promise<ContainerReport[]> {
  const filters = encodeURIComponent(JSON.stringify({ label: ['kk.deploy=true'] }));
  const list = (await engine.ok('GET', `/containers/json?all=true&filters=${filters}`)).body as ListItem[];
  const out: ContainerReport[] = [];
  for (const c of list) {
    const r: ContainerReport = { name: (c.Names[0] ?? c.Id).replace(/^\//, ''), id: c.Id, image: c.Image, state: c.State, timestamp: new Date().toISOString() };
    const info = await engine.inspect(c.Id);
    const health = (info?.State as { Health?: { Status?: string } } | undefined)?.Health?.Status;
    if (health) r.health = health;
    if (c.State === 'running') {
      const s = (await engine.call('GET', `/containers/${c.Id}/stats?stream=false`)).body as Stats | undefined;
      const cpu = (s?.cpu_stats?.cpu_usage?.total_usage ?? 0) - (s?.precpu_stats?.cpu_usage?.total_usage ?? 0);
      const sys = (s?.cpu_stats?.system_cpu_usage ?? 0) - (s?.precpu_stats?.system_cpu_usage ?? 0);
      if (sys > 0 && cpu >= 0) r.cpu_percent = Math.round((cpu / sys) * (s?.cpu_stats?.online_cpus ?? 1) * 10_000) / 100;
      if (typeof s?.memory_stats?.usage === 'number') r.memory_bytes = s.memory_stats.usage;
      if (typeof s?.memory_stats?.limit === 'number') r.memory_limit_bytes = s.memory_stats.limit;
    }
    out.push(r);
  }
  return out;
}
