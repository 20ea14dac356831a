// Data for the web UI's browser tests and bench: many projects written straight into a file
// store through @kk/core (one shared chunk, one manifest and ref per project: fast), with fixed
// creation times so screens are the same on every run.
import { MANIFEST_FORMAT, type Manifest, Store, chunkingFor, forEachLimit, sha256Digest } from '@kk/core';
import { openDriver } from '@kk/drivers';

export const FIXED_TIME = Date.parse('2026-03-01T08:00:00.000Z');

export async function openFileStore(dir: string): Promise<Store> {
  return Store.open(await openDriver(dir), { create: true });
}

/** A version of `files` (path -> content) with a fixed creation time; returns its manifest digest. */
export async function writeVersion(store: Store, project: string, app: string, version: string, files: Record<string, string>, opts: { created?: string; meta?: Record<string, string>; git?: string } = {}): Promise<string> {
  const created = opts.created ?? new Date(FIXED_TIME).toISOString();
  const entries = [];
  for (const [path, content] of Object.entries(files).sort(([a], [b]) => (a < b ? -1 : 1))) {
    const bytes = Buffer.from(content);
    const chunk = sha256Digest(bytes);
    await store.putChunkObject(chunk, Buffer.concat([Buffer.from([0]), bytes]));
    entries.push({ path, size: bytes.length, mode: 0o644, mtime: Date.parse(created), sha256: chunk });
  }
  const dirs = [...new Set(entries.flatMap((e) => e.path.split('/').slice(0, -1).map((_, i, a) => a.slice(0, i + 1).join('/'))))].sort().map((path) => ({ path, mode: 0o755 }));
  const m: Manifest = {
    format: MANIFEST_FORMAT,
    project,
    app,
    version,
    created,
    builder: 'kk-web-test',
    git_commit: opts.git ?? '',
    meta: opts.meta ?? {},
    chunking: store.config.chunking ?? chunkingFor(),
    dirs,
    files: entries,
  };
  const manifest = await store.putManifest(m);
  await store.putRef(project, app, version, manifest, 'ci', created);
  // The first-seen times the server records when a version arrives through it (listing.ts).
  const seen = Buffer.from(JSON.stringify({ created }));
  await store.writer.putIfAbsent(`server/index/projects/${project}`, seen);
  await store.writer.putIfAbsent(`server/index/apps/${project}/${app}`, seen);
  return manifest;
}

/** `count` projects `p-00000`… each with one app `web` and one version `v1` (32 at a time). */
export async function manyProjects(store: Store, count: number, prefix = 'p-'): Promise<string[]> {
  const names = Array.from({ length: count }, (_, i) => `${prefix}${String(i).padStart(5, '0')}`);
  await forEachLimit(names.entries(), 32, async ([i, name]) => {
    await writeVersion(store, name, 'web', 'v1', { 'index.html': '<h1>kk</h1>\n' }, { created: new Date(FIXED_TIME + i * 1000).toISOString() });
  });
  return names;
}
