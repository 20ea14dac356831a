// Targets as a YAML (or JSON) document, the project `sync` section of seed 000 "项目配置扩展":
//
//   - id: project-a            # the kk project (also `project:`)
//     app: web                 # the app to sync (default: the id)
//     sync:
//       enabled: true          # false: the item is skipped
//       driver: agent          # agent | rsync (ssh nodes) | inherit (either)
//       max_parallel_nodes: 2
//       retry: { max_attempts: 5, base_ms: 5000, max_ms: 180000 }
//       offline_policy: wait   # wait | skip
//       nodes:
//         - node_id: node-01   # a node id or name
//           target_path: /srv/project-a
//           strategy: mirror   # mirror | overlay
//           include: ["dist/**"]
//           exclude: [".git/**"]
//           follows: promoted  # promoted | latest | pinned (with pinned: VERSION)
//           on_local_change: overwrite
//           mode: full         # full | skip-existing (only add files the directory lacks)
//
// Everything is checked before anything changes; each problem names its line and field. Applying
// is declarative: targets are created or updated to match, project settings set, and with
// `prune` the targets of the listed (project, app)s that the document does not name are removed.
import { KkError, assertAppName, assertProjectName } from '@kk/core';
import { type Fleet, type FleetNode, type Target, type TargetMode, TARGET_MODES, assertTargetPath } from '@kk/control';
import { LineCounter, parseDocument, type Document } from 'yaml';

type Path = (string | number)[];

export interface ConfigProblem {
  line: number | null;
  field: string;
  message: string;
}

interface TargetSpec {
  project: string;
  app: string;
  node: FleetNode;
  path: string;
  strategy: 'mirror' | 'overlay';
  include: string[];
  exclude: string[];
  follows: 'promoted' | 'latest' | 'pinned';
  pinned: string | null;
  on_local_change: 'overwrite' | 'fail';
  mode: TargetMode;
}

interface ProjectSpec {
  project: string;
  settings: Parameters<Fleet['setProject']>[1];
}

export interface ApplyResult {
  dry_run: boolean;
  created: { project: string; app: string; node: string; path: string; id?: string }[];
  updated: { id: string; project: string; app: string; node: string; path: string; changed: string[] }[];
  unchanged: string[];
  removed: string[];
  projects: string[];
  skipped: string[];
}

const SYNC_KEYS = new Set(['enabled', 'driver', 'max_parallel_nodes', 'retry', 'offline_policy', 'degraded_after', 'nodes']);
const NODE_KEYS = new Set(['node_id', 'node', 'target_path', 'path', 'strategy', 'include', 'exclude', 'follows', 'pinned', 'on_local_change', 'mode', 'app']);

const fieldName = (p: Path) => p.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? k : `.${k}`)).join('');

/** Parse and check a target config. Throws CONFIG_INVALID listing every problem with its line. */
export async function planTargetConfig(fleet: Fleet, text: string, source = 'the target config'): Promise<{ targets: TargetSpec[]; projects: ProjectSpec[]; skipped: string[] }> {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const problems: ConfigProblem[] = [];
  for (const e of doc.errors) problems.push({ line: lc.linePos(e.pos[0]).line, field: '', message: e.message.split('\n')[0]! });
  const lineOf = (d: Document, p: Path): number | null => {
    for (let i = p.length; i >= 0; i--) {
      const n = i === 0 ? d.contents : d.getIn(p.slice(0, i), true);
      const r = (n as { range?: [number, number, number] } | undefined)?.range;
      if (r) return lc.linePos(r[0]).line;
    }
    return null;
  };
  const bad = (p: Path, message: string) => problems.push({ line: lineOf(doc, p), field: fieldName(p), message });
  const targets: TargetSpec[] = [];
  const projects: ProjectSpec[] = [];
  const skipped: string[] = [];
  if (!problems.length) {
    const root = doc.toJS() as unknown;
    let items: unknown[] | undefined;
    let base: Path = [];
    if (Array.isArray(root)) items = root;
    else if (root && typeof root === 'object' && Array.isArray((root as { projects?: unknown }).projects)) {
      items = (root as { projects: unknown[] }).projects;
      base = ['projects'];
    } else bad([], 'the document must be a list of projects (or an object with a `projects:` list), each with a `sync:` section');
    const seen = new Map<string, string>();
    for (const [i, raw] of (items ?? []).entries()) {
      const at = [...base, i];
      if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
        bad(at, 'each project must be a mapping with id and sync');
        continue;
      }
      const it = raw as Record<string, unknown>;
      const project = it.project ?? it.id;
      if (typeof project !== 'string') {
        bad([...at, 'id'], 'id (the kk project) is required and must be a string');
        continue;
      }
      try {
        assertProjectName(project);
      } catch (err) {
        bad([...at, it.project !== undefined ? 'project' : 'id'], (err as Error).message);
        continue;
      }
      const sync = it.sync as Record<string, unknown> | undefined;
      if (!sync || typeof sync !== 'object' || Array.isArray(sync)) {
        bad([...at, 'sync'], `project ${project} needs a sync: mapping`);
        continue;
      }
      const sp = [...at, 'sync'];
      for (const k of Object.keys(sync)) if (!SYNC_KEYS.has(k)) bad([...sp, k], `unknown field ${k} (known: ${[...SYNC_KEYS].join(', ')})`);
      if (sync.enabled !== undefined && typeof sync.enabled !== 'boolean') bad([...sp, 'enabled'], 'enabled must be true or false');
      if (sync.enabled === false) {
        skipped.push(project);
        continue;
      }
      const driver = sync.driver ?? 'inherit';
      if (!['agent', 'rsync', 'inherit'].includes(driver as string)) bad([...sp, 'driver'], `driver must be agent, rsync or inherit, not ${JSON.stringify(driver)}`);
      const settings: ProjectSpec['settings'] = {};
      const int = (k: string, v: unknown, lo: number, hi: number) => {
        if (v === undefined) return undefined;
        if (!Number.isInteger(v) || (v as number) < lo || (v as number) > hi) {
          bad([...sp, ...k.split('.')], `${k} must be an integer from ${lo} to ${hi}`);
          return undefined;
        }
        return v as number;
      };
      const mpn = int('max_parallel_nodes', sync.max_parallel_nodes, 1, 1000);
      if (mpn !== undefined) settings.max_parallel_nodes = mpn;
      const da = int('degraded_after', sync.degraded_after, 1, 1000);
      if (da !== undefined) settings.degraded_after = da;
      if (sync.retry !== undefined) {
        const r = sync.retry as Record<string, unknown>;
        if (!r || typeof r !== 'object' || Array.isArray(r)) bad([...sp, 'retry'], 'retry must be a mapping of max_attempts, base_ms, max_ms');
        else {
          for (const k of Object.keys(r)) if (!['max_attempts', 'base_ms', 'max_ms'].includes(k)) bad([...sp, 'retry', k], `unknown field ${k} (known: max_attempts, base_ms, max_ms)`);
          const retry = { max_attempts: int('retry.max_attempts', r.max_attempts, 1, 100), base_ms: int('retry.base_ms', r.base_ms, 0, 86_400_000), max_ms: int('retry.max_ms', r.max_ms, 0, 86_400_000) };
          settings.retry = Object.fromEntries(Object.entries(retry).filter(([, v]) => v !== undefined));
        }
      }
      if (sync.offline_policy !== undefined) {
        if (sync.offline_policy !== 'wait' && sync.offline_policy !== 'skip') bad([...sp, 'offline_policy'], 'offline_policy must be wait or skip');
        else settings.offline_policy = sync.offline_policy;
      }
      if (Object.keys(settings).length) projects.push({ project, settings });
      if (!Array.isArray(sync.nodes)) {
        bad([...sp, 'nodes'], `project ${project}: sync.nodes must be a list of {node_id, target_path, ...}`);
        continue;
      }
      for (const [j, rawNode] of sync.nodes.entries()) {
        const np = [...sp, 'nodes', j];
        if (!rawNode || typeof rawNode !== 'object' || Array.isArray(rawNode)) {
          bad(np, 'each node entry must be a mapping with node_id and target_path');
          continue;
        }
        const n = rawNode as Record<string, unknown>;
        for (const k of Object.keys(n)) if (!NODE_KEYS.has(k)) bad([...np, k], `unknown field ${k} (known: node_id, target_path, strategy, include, exclude, follows, pinned, on_local_change, mode, app)`);
        const nodeRef = n.node_id ?? n.node;
        const path = n.target_path ?? n.path;
        const app = n.app ?? it.app ?? project;
        const before = problems.length;
        if (typeof nodeRef !== 'string' || !nodeRef) bad([...np, 'node_id'], 'node_id (a node id or name) is required');
        if (typeof app !== 'string') bad([...np, 'app'], 'app must be a string');
        else {
          try {
            assertAppName(app);
          } catch (err) {
            bad([...np, n.app !== undefined ? 'app' : 'id'], (err as Error).message);
          }
        }
        try {
          assertTargetPath(path);
        } catch (err) {
          bad([...np, n.target_path !== undefined || n.path === undefined ? 'target_path' : 'path'], (err as Error).message);
        }
        const strategy = n.strategy ?? 'mirror';
        if (strategy !== 'mirror' && strategy !== 'overlay') bad([...np, 'strategy'], `strategy must be mirror or overlay, not ${JSON.stringify(strategy)}`);
        for (const k of ['include', 'exclude'] as const) {
          const v = n[k];
          if (v !== undefined && (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x === '' || x.includes('\n')))) bad([...np, k], `${k} must be a list of gitignore-style patterns`);
        }
        const follows = n.follows ?? (n.pinned !== undefined ? 'pinned' : 'promoted');
        if (!['promoted', 'latest', 'pinned'].includes(follows as string)) bad([...np, 'follows'], 'follows must be promoted, latest or pinned');
        if ((follows === 'pinned') !== (typeof n.pinned === 'string' && n.pinned !== '')) bad([...np, follows === 'pinned' ? 'pinned' : 'follows'], follows === 'pinned' ? 'a pinned target needs pinned: VERSION' : 'only follows: pinned names a pinned version');
        const olc = n.on_local_change ?? 'overwrite';
        if (olc !== 'overwrite' && olc !== 'fail') bad([...np, 'on_local_change'], 'on_local_change must be overwrite or fail');
        const mode = n.mode ?? 'full';
        if (!(TARGET_MODES as readonly unknown[]).includes(mode)) bad([...np, 'mode'], `mode must be full or skip-existing, not ${JSON.stringify(mode)}`);
        if (problems.length > before) continue;
        let node: FleetNode;
        try {
          node = await fleet.node(nodeRef as string);
        } catch {
          bad([...np, 'node_id'], `no node ${JSON.stringify(nodeRef)} (kk node list shows them; agents appear when they enrol)`);
          continue;
        }
        if ((driver === 'agent' && node.kind !== 'agent') || (driver === 'rsync' && node.kind !== 'ssh')) {
          bad([...np, 'node_id'], `node ${node.name} is an ${node.kind} node but the driver is ${driver as string} (${driver === 'agent' ? 'agent nodes run kk agent' : 'rsync needs an ssh node'})`);
          continue;
        }
        const key = `${node.id}\0${path as string}`;
        if (seen.has(key)) {
          bad([...np, 'target_path'], `${path as string} on node ${node.name} is already listed at ${seen.get(key)}: one directory per node belongs to one target`);
          continue;
        }
        seen.set(key, fieldName(np));
        targets.push({ project, app: app as string, node, path: path as string, strategy: strategy as TargetSpec['strategy'], include: (n.include as string[]) ?? [], exclude: (n.exclude as string[]) ?? [], follows: follows as TargetSpec['follows'], pinned: (n.pinned as string) ?? null, on_local_change: olc as TargetSpec['on_local_change'], mode: mode as TargetMode });
      }
    }
  }
  if (problems.length) {
    problems.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
    const lines = problems.map((p) => `${p.line ? `line ${p.line}: ` : ''}${p.field ? `${p.field}: ` : ''}${p.message}`);
    throw new KkError('CONFIG_INVALID', `${source}: ${lines[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more problem(s))` : ''}`, {
      hint: `${lines.slice(1, 20).join('\n')}${lines.length > 1 ? '\n' : ''}nothing was changed; fix these and apply again`,
      details: { problems },
    });
  }
  return { targets, projects, skipped };
}

const diffTarget = (t: Target, s: TargetSpec) =>
  (['strategy', 'include', 'exclude', 'follows', 'pinned', 'on_local_change', 'mode'] as const).filter((k) => JSON.stringify(t[k]) !== JSON.stringify(s[k]));

/** Check, then make the fleet match the document (see the module comment). */
export async function applyTargetConfig(fleet: Fleet, text: string, opts: { by: string; dryRun?: boolean; prune?: boolean; source?: string; authorize?: (project: string) => void }): Promise<ApplyResult> {
  const plan = await planTargetConfig(fleet, text, opts.source);
  for (const p of new Set([...plan.targets.map((t) => t.project), ...plan.projects.map((p) => p.project)])) opts.authorize?.(p);
  const out: ApplyResult = { dry_run: !!opts.dryRun, created: [], updated: [], unchanged: [], removed: [], projects: plan.projects.map((p) => p.project), skipped: plan.skipped };
  const apps = new Map<string, Target[]>();
  for (const s of plan.targets) {
    const k = `${s.project}/${s.app}`;
    if (!apps.has(k)) apps.set(k, await fleet.targets({ project: s.project, app: s.app }));
  }
  const byNodePath = new Map<string, Target>();
  for (const s of plan.targets) for (const t of await fleet.targets({ node: s.node.id })) byNodePath.set(`${t.node}\0${t.path}`, t);
  const listed = new Set<string>();
  for (const s of plan.targets) {
    const have = byNodePath.get(`${s.node.id}\0${s.path}`);
    if (have && (have.project !== s.project || have.app !== s.app)) {
      throw new KkError('CONFIG_INVALID', `${s.path} on node ${s.node.name} belongs to target ${have.id} of ${have.project}/${have.app}, not ${s.project}/${s.app}`, { hint: 'remove that target first (kk target rm), or pick another path; nothing was changed' });
    }
  }
  for (const p of opts.dryRun ? [] : plan.projects) await fleet.setProject(p.project, p.settings, opts.by);
  for (const s of plan.targets) {
    const have = byNodePath.get(`${s.node.id}\0${s.path}`);
    const where = { project: s.project, app: s.app, node: s.node.name, path: s.path };
    if (!have) {
      const made = opts.dryRun ? undefined : await fleet.addTarget({ project: s.project, app: s.app, node: s.node.id, path: s.path, strategy: s.strategy, include: s.include, exclude: s.exclude, follows: s.follows, ...(s.pinned ? { pinned: s.pinned } : {}), on_local_change: s.on_local_change, mode: s.mode, by: opts.by });
      out.created.push({ ...where, ...(made ? { id: made.id } : {}) });
      continue;
    }
    listed.add(have.id);
    const changed = diffTarget(have, s);
    if (!changed.length) out.unchanged.push(have.id);
    else {
      if (!opts.dryRun) await fleet.updateTarget(have.id, { strategy: s.strategy, include: s.include, exclude: s.exclude, follows: s.follows, pinned: s.pinned, on_local_change: s.on_local_change, mode: s.mode }, opts.by);
      out.updated.push({ id: have.id, ...where, changed });
    }
  }
  if (opts.prune) {
    for (const ts of apps.values()) {
      for (const t of ts) {
        if (listed.has(t.id)) continue;
        if (!opts.dryRun) await fleet.removeTarget(t.id, opts.by);
        out.removed.push(t.id);
      }
    }
  }
  return out;
}
