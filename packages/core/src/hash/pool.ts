// The only file that knows about piscina: a worker pool behind the Hasher interface.
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import type { Digest } from '../digest.js';
import type { ChunkingParams } from '../chunking.js';
import type { CompressionPolicy } from './codec.js';
import type { DeltaRequest, FileHashResult, Failure, SegmentChunk, StageFileRequest, StageFileResult } from './worker.js';

export type { DeltaRequest, FileHashResult, StageFileRequest, StageFileResult } from './worker.js';

/** Everything CPU-heavy in kk: hashing, chunking, (de)compression, verified chunk I/O. */
export interface Hasher {
  /**
   * Hash and chunk files; a failure is returned per file (e.g. it vanished). With `progress`
   * (a BytesCounter), bytes read are counted as they are read, even inside one large file.
   */
  hashFiles(paths: string[], chunking: ChunkingParams, progress?: BytesCounter): Promise<(FileHashResult | Failure)[]>;
  /**
   * Hash and chunk one large file with every worker at once: segments are chunked in parallel
   * and stitched where their boundaries meet, giving exactly the sequential result.
   */
  hashLargeFile(path: string, chunking: ChunkingParams, progress?: BytesCounter): Promise<FileHashResult>;
  /** Read a chunk back from a source file and encode it; fails if the file changed. */
  encodeChunk(path: string, offset: number, size: number, digest: Digest, policy: CompressionPolicy): Promise<Buffer>;
  /** Encode many chunks in one task; a failure is returned per chunk. */
  encodeChunks(items: ChunkSource[], policy: CompressionPolicy): Promise<({ ok: true; object: Buffer } | Failure)[]>;
  /**
   * Decode + verify a stored chunk object. `size` undefined accepts any length up to `maxSize`
   * (default 64 MiB): a server receiving an upload knows the digest, not the size.
   */
  decodeChunk(object: Uint8Array, digest: Digest, size?: number, maxSize?: number): Promise<{ ok: true; raw: Uint8Array } | Failure>;
  /** Decode + verify a stored chunk object and write it into `dst` at `offset`. */
  writeChunk(object: Uint8Array, digest: Digest, size: number, dst: string, offset: number): Promise<{ ok: true } | Failure>;
  /** Copy a verified chunk from a local file into `dst` at `offset`. */
  copyChunk(src: string, srcOffset: number, size: number, digest: Digest, dst: string, offset: number): Promise<{ ok: true } | Failure>;
  /** Create and fill whole single-chunk files (staging), verified, with mode and mtime set. */
  stageFiles(files: StageFileRequest[]): Promise<StageFileResult[]>;
  /** SHA-256 of whole files, streamed; a failure is returned per file. */
  sha256Files(paths: string[]): Promise<({ size: number; sha256: Digest } | Failure)[]>;
  /** Set mode and mtime (seconds) of staged files. */
  finishFiles(files: { dst: string; mode: number; mtime: number }[]): Promise<void>;
  /** Deltas of new chunks against base chunks; null where a delta would not pay. */
  makeDeltas(items: DeltaRequest[], maxRatio: number): Promise<(Buffer | null)[]>;
  /** Rebuild a chunk from a delta and a verified local base; write it into `dst` at `offset`. */
  applyDeltaChunk(
    delta: { object: Uint8Array; src: string; offset: number; size: number; digest: Digest },
    digest: Digest,
    size: number,
    dst: string,
    offset: number,
  ): Promise<{ ok: true } | Failure>;
  readonly threads: number;
  close(): Promise<void>;
}

/** A byte counter workers add to while they work; the main thread reads it for progress. */
export class BytesCounter {
  readonly buffer = new SharedArrayBuffer(8);
  private readonly view = new BigInt64Array(this.buffer);
  get value(): number {
    return Number(Atomics.load(this.view, 0));
  }
}

export interface ChunkSource {
  path: string;
  offset: number;
  size: number;
  digest: Digest;
}

export interface HasherOptions {
  /** Worker threads; default: the machine's available parallelism. */
  threads?: number;
  /** Segment size for parallel chunking of one file. Default 64 MiB. */
  segmentBytes?: number;
  /** How far past its segment a worker keeps chunking, to meet the next. Default 2 max chunks. */
  overrunBytes?: number;
}

export function createHasher(opts: HasherOptions = {}): Hasher {
  const threads = Math.max(1, opts.threads ?? availableParallelism());
  const pool = new Piscina({
    filename: new URL('./worker.js', import.meta.url).href,
    // Lazy: a process whose work needs no worker (a no-op pull) never starts one.
    minThreads: 0,
    maxThreads: threads,
    idleTimeout: 30_000,
    // Chunk tasks are small; keep enough queued to keep every thread busy.
    concurrentTasksPerWorker: 1,
  });
  const run = <T>(name: string, arg: unknown): Promise<T> => pool.run(arg, { name });

  async function hashLargeFile(path: string, chunking: ChunkingParams, progress?: BytesCounter): Promise<FileHashResult> {
    const whole = run<{ size: number; sha256: Digest }>('sha256File', { path });
    const seg = opts.segmentBytes ?? 64 * 1024 * 1024;
    const overrun = opts.overrunBytes ?? 2 * chunking.max;
    const { size } = await stat(path);
    const segment = (start: number, end: number, counter?: BytesCounter) =>
      run<SegmentChunk[]>('chunkSegment', { path, start, end, overrun, chunking, progress: counter?.buffer });
    const starts: number[] = [];
    for (let s = 0; s < size; s += seg) starts.push(s);
    const lists = await Promise.all(starts.map((s) => segment(s, Math.min(size, s + seg), progress)));
    const out: SegmentChunk[] = [];
    let cur = lists[0] ?? [];
    for (let k = 1; k < starts.length; k++) {
      const boundary = starts[k]!;
      const next = new Map(lists[k]!.map((c, i) => [c[0], i]));
      let i = 0;
      while (i < cur.length && cur[i]![0] < boundary) out.push(cur[i++]!);
      while (i < cur.length && !next.has(cur[i]![0])) out.push(cur[i++]!);
      if (i < cur.length) {
        cur = lists[k]!.slice(next.get(cur[i]![0]));
      } else {
        // No meeting point within the overrun: continue the true sequence by itself.
        const last = out.at(-1);
        const pos = last ? last[0] + last[1] : 0;
        // (Its bytes were counted for progress already, by the segment that first read them.)
        cur = pos >= size ? [] : await segment(pos, Math.min(size, boundary + seg));
      }
    }
    out.push(...cur);
    const w = await whole;
    return { path, size: w.size, sha256: w.sha256, chunks: out.map((c) => [c[2], c[1]]) };
  }

  return {
    threads,
    hashLargeFile,
    hashFiles: (paths, chunking, progress) => pool.run({ paths, chunking, progress: progress?.buffer }, { name: 'hashFiles' }),
    async encodeChunk(path, offset, size, digest, policy) {
      const r = await pool.run({ path, offset, size, digest, policy }, { name: 'encodeChunk' });
      if (!r.ok) throw new Error(r.reason);
      const o = r.object as Uint8Array;
      return Buffer.from(o.buffer, o.byteOffset, o.byteLength);
    },
    async encodeChunks(items, policy) {
      const res: ({ ok: true; object: Uint8Array } | Failure)[] = await pool.run({ items, policy }, { name: 'encodeChunks' });
      return res.map((r) => (r.ok ? { ok: true as const, object: Buffer.from(r.object.buffer, r.object.byteOffset, r.object.byteLength) } : r));
    },
    decodeChunk: (object, digest, size, maxSize) => pool.run({ object, digest, size, maxSize }, { name: 'decodeChunk' }),
    writeChunk: (object, digest, size, dst, offset) => pool.run({ object, digest, size, dst, offset }, { name: 'writeChunk' }),
    copyChunk: (src, srcOffset, size, digest, dst, offset) =>
      pool.run({ src, srcOffset, size, digest, dst, offset }, { name: 'copyChunk' }),
    stageFiles: (files) => pool.run({ files }, { name: 'stageFiles' }),
    sha256Files: (paths) => run('sha256Files', { paths }),
    finishFiles: async (files) => {
      await pool.run({ files }, { name: 'finishFiles' });
    },
    async makeDeltas(items, maxRatio) {
      const res: (Uint8Array | null)[] = await run('makeDeltas', { items, maxRatio });
      return res.map((o) => (o ? Buffer.from(o.buffer, o.byteOffset, o.byteLength) : null));
    },
    applyDeltaChunk: (delta, digest, size, dst, offset) => run('applyDeltaChunk', { delta, digest, size, dst, offset }),
    close: () => pool.destroy(),
  };
}
