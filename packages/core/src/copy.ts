// Copy versions between any two stores (`kk copy`): only chunks the destination lacks travel,
// still encoded as stored, each verified on the way; manifests next, refs last. Packed chunks
// are read with coalesced range reads; the destination's pack policy decides where they go
// (packs written with their own chunk map first, then the version's chunk map, as push does).
import type { Digest } from './digest.js';
import { KkError } from './errors.js';
import type { Hasher } from './hash/pool.js';
import { fileChunks } from './manifest.js';
import { type ProgressCallback, phaseReporter } from './progress.js';
import { type Store, type VersionInfo, batches, forEachLimit } from './store.js';
import { type ChunkMapEntry, PackAssembler, type SealedPack, packsChunk } from './pack.js';

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
  /** Packs written to the destination (their chunks count in chunksCopied). */
  packsCopied: number;
  durationMs: number;
}

/** Chunks fetched from the source per round (coalesced range reads inside packs). */
const COPY_BATCH = 256;
const COPY_BATCH_BYTES = 32 * 1024 * 1024;

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
  const result: CopyResult = { versions: selected.length, versionsUnchanged: 0, chunksCopied: 0, bytesCopied: 0, packsCopied: 0, durationMs: 0 };
  // Packed chunks this copy wrote or found, across versions and apps: each is packed once.
  const packedHere = new Map<Digest, ChunkMapEntry>();
  // Oldest first, so the destination's creation order matches the source's.
  for (const v of selected.reverse()) {
    const existing = await to.getRef(v.project, v.app, v.version);
    if (existing?.manifest === v.manifest) {
      result.versionsUnchanged++;
      continue;
    }
    const m = await from.getManifest(v.manifest);
    if (v.chunkMap) from.useChunkMap(v.chunkMap);
    const sizes = new Map<Digest, number>();
    for (const f of m.files) for (const [d, size] of fileChunks(f)) sizes.set(d, size);
    const policy = to.config.packs;
    // Chunks the destination holds in packs of this app's recent versions are reused as they are.
    const packed: ChunkMapEntry[] = [];
    if (policy) {
      const known = await to.recentChunkMaps(v.project, v.app);
      for (const d of sizes.keys()) {
        const e = packedHere.get(d) ?? known.map((k) => k.find(d)).find(Boolean);
        if (e) packed.push(e);
      }
    }
    const reused = new Set(packed.map((e) => e.digest));
    const rest = [...sizes.keys()].filter((d) => !reused.has(d));
    const missing = to.driver.capabilities.packsOnly ? rest : await to.missingChunks(rest);
    const progress = phaseReporter(opts.onProgress, 'upload', missing.length, missing.reduce((s, d) => s + sizes.get(d)!, 0));
    // The same assembler push uses: small chunks arriving raw (a framed chunk of the source, or a
    // loose raw one) go into frames of the destination again (PACKS.md "Frames").
    const writer = policy ? new PackAssembler(policy, to.config.compression) : undefined;
    const storePack = async (p: SealedPack) => {
      await to.putChunkMap(p.entries);
      await to.putPack(p.digest, p.bytes);
      result.packsCopied++;
      result.bytesCopied += p.bytes.length;
      packed.push(...p.entries);
      for (const e of p.entries) packedHere.set(e.digest, e);
    };
    for (const batch of batches(missing, (d) => sizes.get(d)!, COPY_BATCH_BYTES, COPY_BATCH)) {
      const objects = await from.getChunkObjects(batch, opts.concurrency ?? 8);
      await forEachLimit(batch, opts.concurrency ?? 8, async (d) => {
        const object = objects.get(d)!;
        const size = sizes.get(d)!;
        const check = await opts.hasher.decodeChunk(object, d, size);
        if (!check.ok) throw new KkError('CHUNK_CORRUPT', `${check.reason} (source store ${from.driver.name})`, { details: { digest: d } });
        if (writer && packsChunk(policy, size)) {
          const full = writer.framed(size) && object[0] === 0 ? await writer.addRaw(d, object.subarray(1), size) : writer.addObject(d, object, size);
          result.chunksCopied++;
          for (const p of full) await storePack(p);
        } else if (await to.putChunkObject(d, object)) {
          result.chunksCopied++;
          result.bytesCopied += object.length;
        }
        progress.add(1, size);
      });
    }
    for (const p of (await writer?.finish()) ?? []) await storePack(p);
    progress.end();
    const chunkMap = packed.length ? (await to.putChunkMap(packed)).digest : undefined;
    // Delta hints travel too (best effort: a missing one only costs pullers bytes).
    await forEachLimit(Object.entries(m.deltas ?? {}), opts.concurrency ?? 8, async ([t, b]) => {
      const object = await from.getDelta(t as Digest, b).catch(() => undefined);
      if (object) await to.putDelta(t as Digest, b, object).catch(() => false);
    });
    await to.putManifest(m);
    await to.flush();
    await to.putRef(v.project, v.app, v.version, v.manifest, v.by, v.created, chunkMap);
    await to.flush();
  }
  result.durationMs = Math.round(performance.now() - t0);
  return result;
}
