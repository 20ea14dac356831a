// The only file that knows about piscina: a worker pool behind the Hasher interface.
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import type { Digest } from '../digest.js';
import type { ChunkingParams } from '../chunking.js';
import type { CompressionPolicy } from './codec.js';
import type { FileHashResult, Failure, StageFileRequest, StageFileResult } from './worker.js';

export type { FileHashResult, StageFileRequest, StageFileResult } from './worker.js';

/** Everything CPU-heavy in kk: hashing, chunking, (de)compression, verified chunk I/O. */
export interface Hasher {
  /**
   * Hash and chunk files; a failure is returned per file (e.g. it vanished). With `progress`
   * (a BytesCounter), bytes read are counted as they are read, even inside one large file.
   */
  hashFiles(paths: string[], chunking: ChunkingParams, progress?: BytesCounter): Promise<(FileHashResult | Failure)[]>;
  /** Read a chunk back from a source file and encode it; fails if the file changed. */
  encodeChunk(path: string, offset: number, size: number, digest: Digest, policy: CompressionPolicy): Promise<Buffer>;
  /** Encode many chunks in one task; a failure is returned per chunk. */
  encodeChunks(items: ChunkSource[], policy: CompressionPolicy): Promise<({ ok: true; object: Buffer } | Failure)[]>;
  /** Decode + verify a stored chunk object; throws CHUNK_CORRUPT-worthy Error on mismatch. */
  decodeChunk(object: Uint8Array, digest: Digest, size: number): Promise<{ ok: true; raw: Uint8Array } | Failure>;
  /** Decode + verify a stored chunk object and write it into `dst` at `offset`. */
  writeChunk(object: Uint8Array, digest: Digest, size: number, dst: string, offset: number): Promise<{ ok: true } | Failure>;
  /** Copy a verified chunk from a local file into `dst` at `offset`. */
  copyChunk(src: string, srcOffset: number, size: number, digest: Digest, dst: string, offset: number): Promise<{ ok: true } | Failure>;
  /** Create and fill whole single-chunk files (staging), verified, with mode and mtime set. */
  stageFiles(files: StageFileRequest[]): Promise<StageFileResult[]>;
  /** Set mode and mtime (seconds) of staged files. */
  finishFiles(files: { dst: string; mode: number; mtime: number }[]): Promise<void>;
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
}

export function createHasher(opts: HasherOptions = {}): Hasher {
  const threads = Math.max(1, opts.threads ?? availableParallelism());
  const pool = new Piscina({
    filename: new URL('./worker.js', import.meta.url).href,
    minThreads: 1,
    maxThreads: threads,
    idleTimeout: 30_000,
    // Chunk tasks are small; keep enough queued to keep every thread busy.
    concurrentTasksPerWorker: 1,
  });
  return {
    threads,
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
    decodeChunk: (object, digest, size) => pool.run({ object, digest, size }, { name: 'decodeChunk' }),
    writeChunk: (object, digest, size, dst, offset) => pool.run({ object, digest, size, dst, offset }, { name: 'writeChunk' }),
    copyChunk: (src, srcOffset, size, digest, dst, offset) =>
      pool.run({ src, srcOffset, size, digest, dst, offset }, { name: 'copyChunk' }),
    stageFiles: (files) => pool.run({ files }, { name: 'stageFiles' }),
    finishFiles: async (files) => {
      await pool.run({ files }, { name: 'finishFiles' });
    },
    close: () => pool.destroy(),
  };
}
