// Pool worker: pure functions over paths and byte ranges (DESIGN 2). Imports nothing else from
// core; every failure the caller must react to is returned as a value, not thrown, because
// errors lose their type when they cross the thread boundary.
import { closeSync, fchmodSync, fstatSync, futimesSync, openSync, readSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { Cdc, type CdcParams } from './fastcdc.js';
import { type CompressionPolicy, decodeChunkObject, encodeChunkObject } from './codec.js';
import { applyDelta, encodeDelta } from './delta.js';

export type WorkerDigest = `sha256:${string}`;

export interface FileHashResult {
  path: string;
  size: number;
  sha256: WorkerDigest;
  chunks: [WorkerDigest, number][];
}

export type Failure = { ok: false; reason: string };

const cdcCache = new Map<string, Cdc>();
/** Largest chunk any valid chunking allows (chunking.ts caps max at 64 MiB). */
const MAX_CHUNK = 64 * 1024 * 1024;
let readBuf: Buffer | undefined;

function cdcFor(p: CdcParams): Cdc {
  const key = `${p.min}/${p.avg}/${p.max}/${p.seed}`;
  let c = cdcCache.get(key);
  if (!c) cdcCache.set(key, (c = new Cdc(p)));
  return c;
}

const digestOf = (data: Uint8Array): WorkerDigest => `sha256:${createHash('sha256').update(data).digest('hex')}`;

function readFully(fd: number, buf: Uint8Array, position: number): number {
  let got = 0;
  while (got < buf.length) {
    const n = readSync(fd, buf, got, buf.length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

function hashOne(path: string, cdc: Cdc, progress?: BigInt64Array): FileHashResult {
  const { max } = cdc.p;
  const bufSize = Math.max(8 * 1024 * 1024, 2 * max);
  if (!readBuf || readBuf.length < bufSize) readBuf = Buffer.allocUnsafe(bufSize);
  const buf = readBuf;
  const whole = createHash('sha256');
  const chunks: [WorkerDigest, number][] = [];
  const fd = openSync(path, 'r');
  try {
    let filled = 0;
    let pos = 0;
    let offset = 0;
    let eof = false;
    for (;;) {
      if (!eof && filled - pos < max) {
        buf.copyWithin(0, pos, filled);
        filled -= pos;
        pos = 0;
        while (filled < buf.length) {
          const n = readSync(fd, buf, filled, buf.length - filled, offset);
          if (n === 0) {
            eof = true;
            break;
          }
          filled += n;
          offset += n;
          if (progress) Atomics.add(progress, 0, BigInt(n));
        }
      }
      const avail = filled - pos;
      if (avail === 0) break;
      const n = cdc.cut(buf, pos, avail);
      const chunk = buf.subarray(pos, pos + n);
      whole.update(chunk);
      chunks.push([digestOf(chunk), n]);
      pos += n;
    }
    return { path, size: offset, sha256: `sha256:${whole.digest('hex')}`, chunks };
  } finally {
    closeSync(fd);
  }
}

/** Hash and chunk whole files; bytes read are added to `progress[0]` as they are read. */
export function hashFiles(req: { paths: string[]; chunking: CdcParams; progress?: SharedArrayBuffer }): (FileHashResult | Failure)[] {
  const cdc = cdcFor(req.chunking);
  const progress = req.progress ? new BigInt64Array(req.progress) : undefined;
  return req.paths.map((p) => {
    try {
      return hashOne(p, cdc, progress);
    } catch (err) {
      return { ok: false, reason: `${(err as Error).message}` };
    }
  });
}

/** Encode many chunks in one task (small chunks would otherwise pay a message each). */
export function encodeChunks(req: {
  items: { path: string; offset: number; size: number; digest: WorkerDigest }[];
  policy: CompressionPolicy;
}): ({ ok: true; object: Uint8Array } | Failure)[] {
  return req.items.map((it) => encodeChunk({ ...it, policy: req.policy }));
}

/** Read one chunk of a source file, check it still has the digest hashed earlier, encode it. */
export function encodeChunk(req: {
  path: string;
  offset: number;
  size: number;
  digest: WorkerDigest;
  policy: CompressionPolicy;
}): { ok: true; object: Uint8Array } | Failure {
  const fd = openSync(req.path, 'r');
  try {
    const raw = Buffer.allocUnsafe(req.size);
    const got = readFully(fd, raw, req.offset);
    if (got !== req.size || digestOf(raw) !== req.digest) {
      return { ok: false, reason: `${req.path} changed while it was being pushed` };
    }
    return { ok: true, object: encodeChunkObject(raw, req.policy) };
  } finally {
    closeSync(fd);
  }
}

/** `size` undefined: any length up to `maxSize` (a server receiving a chunk knows no size). */
function decodeVerified(object: Uint8Array, digest: WorkerDigest, size: number | undefined, maxSize = MAX_CHUNK): Uint8Array | Failure {
  let raw: Uint8Array;
  try {
    raw = decodeChunkObject(object, size ?? maxSize);
  } catch (err) {
    return { ok: false, reason: `chunk ${digest} cannot be decoded: ${(err as Error).message}` };
  }
  if ((size !== undefined && raw.length !== size) || digestOf(raw) !== digest) {
    return { ok: false, reason: `chunk ${digest} does not match its digest` };
  }
  return raw;
}

/** Decode and verify a stored chunk object, returning its raw bytes. */
export function decodeChunk(req: { object: Uint8Array; digest: WorkerDigest; size?: number; maxSize?: number }): { ok: true; raw: Uint8Array } | Failure {
  const r = decodeVerified(req.object, req.digest, req.size, req.maxSize);
  return r instanceof Uint8Array ? { ok: true, raw: r } : r;
}

function writeAt(path: string, data: Uint8Array, offset: number): void {
  const fd = openSync(path, 'r+');
  try {
    let done = 0;
    while (done < data.length) done += writeSync(fd, data, done, data.length - done, offset + done);
  } finally {
    closeSync(fd);
  }
}

/** Decode, verify and write a stored chunk object into a staged file at `offset`. */
export function writeChunk(req: {
  object: Uint8Array;
  digest: WorkerDigest;
  size: number;
  dst: string;
  offset: number;
}): { ok: true } | Failure {
  return writeIfRebuilt(decodeVerified(req.object, req.digest, req.size), req.dst, req.offset);
}

/** Write verified chunk bytes into a staged file, or pass the failure on. */
function writeIfRebuilt(r: Uint8Array | Failure, dst: string, offset: number): { ok: true } | Failure {
  if (!(r instanceof Uint8Array)) return r;
  writeAt(dst, r, offset);
  return { ok: true };
}

/**
 * Copy a chunk from a local file believed to hold it (seeding) into a staged file, verifying
 * the bytes on the way. `ok: false` means the source no longer holds it; nothing was written.
 */
export function copyChunk(req: {
  src: string;
  srcOffset: number;
  size: number;
  digest: WorkerDigest;
  dst: string;
  offset: number;
}): { ok: true } | Failure {
  let fd: number;
  try {
    fd = openSync(req.src, 'r');
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
  const raw = Buffer.allocUnsafe(req.size);
  try {
    if (!fstatSync(fd).isFile()) return { ok: false, reason: `${req.src} is not a regular file` };
    const got = readFully(fd, raw, req.srcOffset);
    if (got !== req.size || digestOf(raw) !== req.digest) return { ok: false, reason: 'seed changed' };
  } finally {
    closeSync(fd);
  }
  writeAt(req.dst, raw, req.offset);
  return { ok: true };
}

/** Raw SHA-256 throughput probe for bench/: hash a buffer `rounds` times. */
export function sha256Rounds(req: { bytes: number; rounds: number }): number {
  const data = Buffer.alloc(req.bytes, 7);
  const t0 = performance.now();
  for (let i = 0; i < req.rounds; i++) createHash('sha256').update(data).digest();
  return performance.now() - t0;
}

export interface StageFileRequest {
  dst: string;
  size: number;
  mode: number;
  /** utimes argument in seconds. */
  mtime: number;
  digest: WorkerDigest;
  /** Local files believed to hold the bytes, tried in order. */
  seeds: { src: string; offset: number }[];
  /** The stored object, when no seed is known or the seeds failed. */
  object?: Uint8Array;
  /** A delta from a chunk held locally, tried after the seeds. */
  delta?: { object: Uint8Array; src: string; offset: number; size: number; digest: WorkerDigest };
}

export type StageFileResult = { ok: true; seeded: boolean; fromDelta: boolean } | { ok: false; reason: string; corrupt: boolean };

function readVerified(src: string, offset: number, size: number, digest: WorkerDigest): Uint8Array | undefined {
  let fd: number;
  try {
    fd = openSync(src, 'r');
  } catch {
    return undefined;
  }
  try {
    if (!fstatSync(fd).isFile()) return undefined;
    const raw = Buffer.allocUnsafe(size);
    return readFully(fd, raw, offset) === size && digestOf(raw) === digest ? raw : undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * Stage whole single-chunk files in one task: create, fill from a verified seed or a verified
 * stored object, set mode and mtime. A file whose seeds all failed and that has no object is
 * reported, not written; the caller fetches the object and asks again.
 */
export function stageFiles(req: { files: StageFileRequest[] }): StageFileResult[] {
  return req.files.map((f) => {
    let data: Uint8Array | undefined;
    let seeded = false;
    let fromDelta = false;
    if (f.size === 0) data = new Uint8Array(0);
    if (!data && f.object) {
      const r = decodeVerified(f.object, f.digest, f.size);
      if (!(r instanceof Uint8Array)) return { ok: false, reason: r.reason, corrupt: true };
      data = r;
    }
    for (const s of data ? [] : f.seeds) {
      data = readVerified(s.src, s.offset, f.size, f.digest);
      if (data) {
        seeded = true;
        break;
      }
    }
    if (!data && f.delta) {
      const r = rebuildFromDelta(f.delta, f.digest, f.size);
      if (r instanceof Uint8Array) {
        data = r;
        fromDelta = true;
      }
    }
    if (!data) return { ok: false, reason: 'no seed holds it', corrupt: false };
    const fd = openSync(f.dst, 'w', 0o600);
    try {
      let done = 0;
      while (done < data.length) done += writeSync(fd, data, done, data.length - done, done);
      fchmodSync(fd, f.mode);
      futimesSync(fd, f.mtime, f.mtime);
    } finally {
      closeSync(fd);
    }
    return { ok: true, seeded, fromDelta };
  });
}

/** Set mode and mtime of staged files (after their chunks were written). */
export function finishFiles(req: { files: { dst: string; mode: number; mtime: number }[] }): true {
  for (const f of req.files) {
    const fd = openSync(f.dst, 'r+');
    try {
      fchmodSync(fd, f.mode);
      futimesSync(fd, f.mtime, f.mtime);
    } finally {
      closeSync(fd);
    }
  }
  return true;
}

/** A chunk found in a segment: absolute offset, size, digest. */
export type SegmentChunk = [number, number, WorkerDigest];

/**
 * Chunk part of a file as if a chunk started at `start`: every chunk starting before `end`,
 * then those starting before `end + overrun` (so the caller can find where the true sequence
 * and the next segment's meet). Bytes of [start, end) are added to `progress[0]`.
 */
export function chunkSegment(req: {
  path: string;
  start: number;
  end: number;
  overrun: number;
  chunking: CdcParams;
  progress?: SharedArrayBuffer;
}): SegmentChunk[] {
  const cdc = cdcFor(req.chunking);
  const progress = req.progress ? new BigInt64Array(req.progress) : undefined;
  const { max } = cdc.p;
  const bufSize = Math.max(8 * 1024 * 1024, 2 * max);
  if (!readBuf || readBuf.length < bufSize) readBuf = Buffer.allocUnsafe(bufSize);
  const buf = readBuf;
  const out: SegmentChunk[] = [];
  const limit = req.end + req.overrun;
  const fd = openSync(req.path, 'r');
  try {
    let filled = 0;
    let pos = 0;
    let bufStart = req.start; // file offset of buf[0]
    let readAt = req.start;
    let eof = false;
    while (bufStart + pos < limit) {
      if (!eof && filled - pos < max) {
        buf.copyWithin(0, pos, filled);
        filled -= pos;
        bufStart += pos;
        pos = 0;
        while (filled < buf.length) {
          const n = readSync(fd, buf, filled, buf.length - filled, readAt);
          if (n === 0) {
            eof = true;
            break;
          }
          if (progress && readAt < req.end) Atomics.add(progress, 0, BigInt(Math.min(n, req.end - readAt)));
          filled += n;
          readAt += n;
        }
      }
      const avail = filled - pos;
      if (avail === 0) break;
      const n = cdc.cut(buf, pos, avail);
      out.push([bufStart + pos, n, digestOf(buf.subarray(pos, pos + n))]);
      pos += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

/** SHA-256 of whole files (staged files checked before a commit); a failure per file. */
export function sha256Files(req: { paths: string[] }): ({ size: number; sha256: WorkerDigest } | Failure)[] {
  return req.paths.map((path) => {
    try {
      return sha256File({ path });
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
  });
}

/** SHA-256 of a whole file, streamed. */
export function sha256File(req: { path: string }): { size: number; sha256: WorkerDigest } {
  if (!readBuf) readBuf = Buffer.allocUnsafe(8 * 1024 * 1024);
  const h = createHash('sha256');
  const fd = openSync(req.path, 'r');
  let size = 0;
  try {
    for (;;) {
      const n = readSync(fd, readBuf, 0, readBuf.length, size);
      if (n === 0) break;
      h.update(readBuf.subarray(0, n));
      size += n;
    }
  } finally {
    closeSync(fd);
  }
  return { size, sha256: `sha256:${h.digest('hex')}` };
}

/** Rebuild a chunk from a delta and its base read (and verified) from a local file. */
function rebuildFromDelta(
  d: { object: Uint8Array; src: string; offset: number; size: number; digest: WorkerDigest },
  digest: WorkerDigest,
  size: number,
): Uint8Array | Failure {
  const base = readVerified(d.src, d.offset, d.size, d.digest);
  if (!base) return { ok: false, reason: 'the delta base changed on disk' };
  let raw: Uint8Array;
  try {
    raw = applyDelta(base, decodeChunkObject(d.object, MAX_CHUNK), size);
  } catch (err) {
    return { ok: false, reason: `delta for ${digest} cannot be applied: ${(err as Error).message}` };
  }
  if (raw.length !== size || digestOf(raw) !== digest) return { ok: false, reason: `delta for ${digest} does not rebuild it` };
  return raw;
}

/** Rebuild a chunk from a delta and a local base, and write it into a staged file. */
export function applyDeltaChunk(req: {
  delta: { object: Uint8Array; src: string; offset: number; size: number; digest: WorkerDigest };
  digest: WorkerDigest;
  size: number;
  dst: string;
  offset: number;
}): { ok: true } | Failure {
  return writeIfRebuilt(rebuildFromDelta(req.delta, req.digest, req.size), req.dst, req.offset);
}

export interface DeltaRequest {
  /** The new chunk, read back from the pushed file. */
  path: string;
  offset: number;
  size: number;
  digest: WorkerDigest;
  /** The base chunk's stored object. */
  baseObject: Uint8Array;
  baseDigest: WorkerDigest;
  baseSize: number;
}

/** Deltas of new chunks against their bases; null where none is at most `maxRatio` of the chunk. */
export function makeDeltas(req: { items: DeltaRequest[]; maxRatio: number }): (Uint8Array | null)[] {
  return req.items.map((it) => {
    const base = decodeVerified(it.baseObject, it.baseDigest, it.baseSize);
    if (!(base instanceof Uint8Array)) return null;
    const target = readVerified(it.path, it.offset, it.size, it.digest);
    if (!target) return null;
    const ops = encodeDelta(base, target);
    if (ops.length > it.size * req.maxRatio * 4) return null;
    const object = encodeChunkObject(ops, { algorithm: 'brotli', level: 5, minSaving: 0.05 });
    return object.length <= it.size * req.maxRatio ? object : null;
  });
}
