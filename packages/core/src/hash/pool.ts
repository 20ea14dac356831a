// The only file that knows about piscina: a worker pool behind the Hasher interface.
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import type { Digest } from '../digest.js';
import type { ChunkingParams } from '../chunking.js';
import type { CompressionPolicy } from './codec.js';
import type { FileHashResult, Failure } from './worker.js';

export type { FileHashResult } from './worker.js';

/** Everything CPU-heavy in kk: hashing, chunking, (de)compression, verified chunk I/O. */
export interface Hasher {
  /** Hash and chunk files; a failure is returned per file (e.g. it vanished). */
  hashFiles(paths: string[], chunking: ChunkingParams): Promise<(FileHashResult | Failure)[]>;
  /** Read a chunk back from a source file and encode it; fails if the file changed. */
  encodeChunk(path: string, offset: number, size: number, digest: Digest, policy: CompressionPolicy): Promise<Buffer>;
  /** Decode + verify a stored chunk object; throws CHUNK_CORRUPT-worthy Error on mismatch. */
  decodeChunk(object: Uint8Array, digest: Digest, size: number): Promise<{ ok: true; raw: Uint8Array } | Failure>;
  /** Decode + verify a stored chunk object and write it into `dst` at `offset`. */
  writeChunk(object: Uint8Array, digest: Digest, size: number, dst: string, offset: number): Promise<{ ok: true } | Failure>;
  /** Copy a verified chunk from a local file into `dst` at `offset`. */
  copyChunk(src: string, srcOffset: number, size: number, digest: Digest, dst: string, offset: number): Promise<{ ok: true } | Failure>;
  readonly threads: number;
  close(): Promise<void>;
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
    hashFiles: (paths, chunking) => pool.run({ paths, chunking }, { name: 'hashFiles' }),
    async encodeChunk(path, offset, size, digest, policy) {
      const r = await pool.run({ path, offset, size, digest, policy }, { name: 'encodeChunk' });
      if (!r.ok) throw new Error(r.reason);
      const o = r.object as Uint8Array;
      return Buffer.from(o.buffer, o.byteOffset, o.byteLength);
    },
    decodeChunk: (object, digest, size) => pool.run({ object, digest, size }, { name: 'decodeChunk' }),
    writeChunk: (object, digest, size, dst, offset) => pool.run({ object, digest, size, dst, offset }, { name: 'writeChunk' }),
    copyChunk: (src, srcOffset, size, digest, dst, offset) =>
      pool.run({ src, srcOffset, size, digest, dst, offset }, { name: 'copyChunk' }),
    close: () => pool.destroy(),
  };
}
