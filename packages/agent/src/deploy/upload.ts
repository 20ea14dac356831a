// A file sent to a node through the store (seed deploy-11, the tar deploy's archive): cut into
// fixed-size chunks (1 MiB, or the store's maximum if smaller), each stored as a loose chunk
// object under the SHA-256 of its bytes, plus one more chunk holding the list (`kk-upload/1`
// JSON: name, size, sha256 of the whole file, chunk size, the chunk digests in order). The list's
// digest names the upload. Resumable for free: before sending, the store says which chunks it
// lacks, and only those go (an upload killed halfway sends just the rest the next time).
// Digest-checked at both ends: the server verifies each chunk on PUT, the node verifies each
// chunk it reads and the whole file's sha256 against the list.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { brotliDecompressSync } from 'node:zlib';
import { type Digest, KkError, type Store } from '@kk/core';

export const UPLOAD_FORMAT = 'kk-upload/1';
const CHUNK = 1024 * 1024;
const MAX_CHUNKS = 20_000;

export interface UploadList {
  format: typeof UPLOAD_FORMAT;
  name: string;
  size: number;
  /** Hex SHA-256 of the whole file. */
  sha256: string;
  chunk_size: number;
  chunks: Digest[];
}

export interface UploadResult {
  /** The list's digest: what a tar deploy names as `upload`. */
  upload: Digest;
  sha256: string;
  size: number;
  chunks: number;
  /** Chunks sent by this call (the others were in the store already). */
  sent: number;
  bytes_sent: number;
}

const digestOf = (b: Uint8Array): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;
const rawObject = (b: Uint8Array) => Buffer.concat([Buffer.from([0]), b]);

function decode(obj: Buffer, digest: Digest, max: number): Buffer {
  let raw: Buffer;
  if (obj[0] === 0) raw = obj.subarray(1);
  else if (obj[0] === 1) raw = brotliDecompressSync(obj.subarray(1), { maxOutputLength: max });
  else throw new KkError('CHUNK_CORRUPT', `chunk ${digest}: unknown encoding ${obj[0]}`);
  if (raw.length > max || digestOf(raw) !== digest) throw new KkError('CHUNK_CORRUPT', `chunk ${digest} does not match its digest`, { hint: 'upload the file again' });
  return raw;
}

/** Upload `file` (only the chunks the store lacks). `onProgress(sentBytes, totalBytes)` after each chunk sent. */
export async function uploadFile(store: Store, file: string, opts: { name?: string; concurrency?: number; onProgress?: (done: number, total: number) => void } = {}): Promise<UploadResult> {
  const chunkSize = Math.min(CHUNK, store.config.chunking.max);
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const n = Math.ceil(size / chunkSize);
    if (n > MAX_CHUNKS) throw new KkError('CONFIG_INVALID', `${file} is ${size} bytes: over the ${MAX_CHUNKS * chunkSize}-byte limit of an upload`, { hint: 'ship it as a kk version instead' });
    // Pass 1: the digests (and the whole file's sha256), reading sequentially.
    const whole = createHash('sha256');
    const chunks: Digest[] = [];
    const buf = Buffer.allocUnsafe(chunkSize);
    for (let i = 0; i < n; i++) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(chunkSize, size - i * chunkSize), i * chunkSize);
      const part = buf.subarray(0, bytesRead);
      whole.update(part);
      chunks.push(digestOf(part));
    }
    const list: UploadList = { format: UPLOAD_FORMAT, name: opts.name ?? file.split('/').pop()!, size, sha256: whole.digest('hex'), chunk_size: chunkSize, chunks };
    const listBytes = Buffer.from(JSON.stringify(list));
    const listDigest = digestOf(listBytes);
    // Pass 2: only what the store lacks.
    const missing = new Set(await store.missingChunks(chunks));
    const todo: { d: Digest; i: number }[] = [];
    const queued = new Set<Digest>();
    chunks.forEach((d, i) => {
      if (missing.has(d) && !queued.has(d)) todo.push({ d, i }), queued.add(d);
    });
    let sent = 0;
    let bytes = 0;
    let next = 0;
    const total = todo.reduce((s, c) => s + Math.min(chunkSize, size - c.i * chunkSize), 0);
    const worker = async () => {
      const b = Buffer.allocUnsafe(chunkSize);
      while (next < todo.length) {
        const c = todo[next++]!;
        const { bytesRead } = await fh.read(b, 0, Math.min(chunkSize, size - c.i * chunkSize), c.i * chunkSize);
        const part = b.subarray(0, bytesRead);
        if (digestOf(part) !== c.d) throw new KkError('SOURCE_INVALID', `${file} changed while it was uploaded`, { hint: 'upload it again once it is complete' });
        await store.putChunkObject(c.d, rawObject(part));
        sent++;
        bytes += bytesRead;
        opts.onProgress?.(bytes, total);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency ?? 4, todo.length)) }, worker));
    // The list last: an upload whose list exists is complete.
    await store.putChunkObject(listDigest, rawObject(listBytes));
    return { upload: listDigest, sha256: list.sha256, size, chunks: chunks.length, sent, bytes_sent: bytes };
  } finally {
    await fh.close();
  }
}

/** Read an upload's list. NOT_FOUND when the upload never finished. */
export async function readUploadList(store: Store, upload: Digest): Promise<UploadList> {
  const raw = decode(await store.getChunkObject(upload), upload, 8 * 1024 * 1024);
  let list: UploadList;
  try {
    list = JSON.parse(raw.toString('utf8')) as UploadList;
  } catch {
    throw new KkError('CHUNK_CORRUPT', `upload ${upload} is not an upload list`);
  }
  if (list.format !== UPLOAD_FORMAT || !Array.isArray(list.chunks) || !Number.isSafeInteger(list.size) || !Number.isSafeInteger(list.chunk_size)) throw new KkError('CHUNK_CORRUPT', `upload ${upload} is not a ${UPLOAD_FORMAT} list`);
  return list;
}

/**
 * Write an upload's file to `dest`, every chunk checked, then the whole file's sha256 against
 * the list (and `expectSha256`). `onProgress(doneBytes, totalBytes)` per chunk.
 */
export async function fetchUpload(store: Store, upload: Digest, dest: string, opts: { expectSha256?: string; signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {}): Promise<UploadList> {
  const list = await readUploadList(store, upload);
  if (opts.expectSha256 && opts.expectSha256 !== list.sha256) throw new KkError('CHUNK_CORRUPT', `upload ${upload} holds sha256 ${list.sha256}, not ${opts.expectSha256}`);
  const fh = await open(dest, 'w', 0o600);
  const whole = createHash('sha256');
  let done = 0;
  try {
    for (let i = 0; i < list.chunks.length; i += 8) {
      if (opts.signal?.aborted) throw new KkError('BACKEND', 'the transfer was stopped');
      const batch = list.chunks.slice(i, i + 8);
      const got = await store.getChunkObjects(batch, 8);
      for (const d of batch) {
        const raw = decode(got.get(d)!, d, list.chunk_size);
        whole.update(raw);
        await fh.write(raw, 0, raw.length, done);
        done += raw.length;
        opts.onProgress?.(done, list.size);
      }
    }
  } finally {
    await fh.close();
  }
  const sha = whole.digest('hex');
  if (done !== list.size || sha !== list.sha256) throw new KkError('CHUNK_CORRUPT', `the file of upload ${upload} came out as ${done} bytes with sha256 ${sha}, not ${list.size} / ${list.sha256}`, { hint: 'upload it again' });
  return list;
}
