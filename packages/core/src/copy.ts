// Copy versions between any two stores (`kk copy`): only chunks the destination lacks travel,
// still encoded as stored, each verified on the way; manifests next, refs last.
import type { Digest } from './digest.js';
import { KkError } from './errors.js';
import type { Hasher } from './hash/pool.js';
import { fileChunks } from './manifest.js';
import { type ProgressCallback, phaseReporter } from './progress.js';
import { type Store, type VersionInfo, forEachLimit } from './store.js';

export interface CopyOptions {
  from: Store;
  to: Store;
  hasher: Hasher;
  /** Narrow the copy: a project, an app of it, one version of that app. */
  project?: string;
  app?: string;
  version?: string;
  concurrency?: number;
  onProgress?: ProgressCallback;
}

export interface CopyResult {
  versions: number;
  /** Versions the destination already had (same manifest). */
  versionsUnchanged: number;
  chunksCopied: number;
  /** Bytes sent to the destination, as stored. */
  bytesCopied: number;
  durationMs: number;
}

export async function copyVersions(opts: CopyOptions): Promise<CopyResult> {
  const t0 = performance.now();
  const { from, to } = opts;
  if (opts.app && !opts.project) throw new TypeError('app needs project');
  if (opts.version && !opts.app) throw new TypeError('version needs app');
  const selected: VersionInfo[] = [];
  const projects = opts.project ? [opts.project] : await from.listProjects();
  for (const p of projects) {
    for (const a of opts.app ? [opts.app] : await from.listApps(p)) {
      if (opts.version) selected.push(await from.resolveVersion(p, a, opts.version));
      else selected.push(...(await from.listVersions(p, a)));
    }
  }
  if (opts.version === undefined && selected.length === 0 && opts.project) {
    throw new KkError('NOT_FOUND', `nothing to copy under ${[opts.project, opts.app].filter(Boolean).join('/')}`);
  }
  const result: CopyResult = { versions: selected.length, versionsUnchanged: 0, chunksCopied: 0, bytesCopied: 0, durationMs: 0 };
  // Oldest first, so the destination's creation order matches the source's.
  for (const v of selected.reverse()) {
    const existing = await to.getRef(v.project, v.app, v.version);
    if (existing?.manifest === v.manifest) {
      result.versionsUnchanged++;
      continue;
    }
    const m = await from.getManifest(v.manifest);
    const sizes = new Map<Digest, number>();
    for (const f of m.files) for (const [d, size] of fileChunks(f)) sizes.set(d, size);
    const missing = await to.missingChunks(sizes.keys());
    const progress = phaseReporter(opts.onProgress, 'upload', missing.length, missing.reduce((s, d) => s + sizes.get(d)!, 0));
    await forEachLimit(missing, opts.concurrency ?? 8, async (d) => {
      const object = await from.getChunkObject(d);
      const check = await opts.hasher.decodeChunk(object, d, sizes.get(d)!);
      if (!check.ok) throw new KkError('CHUNK_CORRUPT', `${check.reason} (source store ${from.driver.name})`, { details: { digest: d } });
      if (await to.putChunkObject(d, object)) {
        result.chunksCopied++;
        result.bytesCopied += object.length;
      }
      progress.add(1, sizes.get(d)!);
    });
    progress.end();
    // Delta hints travel too (best effort: a missing one only costs pullers bytes).
    await forEachLimit(Object.entries(m.deltas ?? {}), opts.concurrency ?? 8, async ([t, b]) => {
      const object = await from.getDelta(t as Digest, b).catch(() => undefined);
      if (object) await to.putDelta(t as Digest, b, object).catch(() => false);
    });
    await to.putManifest(m);
    await to.flush();
    await to.putRef(v.project, v.app, v.version, v.manifest, v.by, v.created);
    await to.flush();
  }
  result.durationMs = Math.round(performance.now() - t0);
  return result;
}
