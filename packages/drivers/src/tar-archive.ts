// One uncompressed tar holding an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/*`),
// used as a key-value container by offsets: nothing is ever extracted. Only regular files with
// exactly those names (plus the `blobs/` directories and PAX headers) are accepted; links,
// devices, other names and duplicates are refused, and every blob read whole is checked against
// its name. Writers append blobs, then a new `index.json`, then the end blocks, under a lock file;
// whatever follows the last complete `index.json` of an interrupted write is cut off by the next
// writer. Deleting only drops index entries; a writer's close() compacts the file into a new one
// (renamed over the old) when most of it is dead (deleted objects, superseded index.json files).
import { createHash } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { type FileHandle, mkdir, open, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { KkError } from '@kk/core';
import type { ByteRange } from '@kk/core';
import type { OciBackend } from './oci-store.js';

const BLOCK = 512;
const REF_NAME = 'org.opencontainers.image.ref.name';
const INDEX_MEDIA = 'application/vnd.oci.image.index.v1+json';
const LAYOUT = Buffer.from('{"imageLayoutVersion":"1.0.0"}');
const BLOB_NAME = /^blobs\/sha256\/([0-9a-f]{64})$/;
const DIR_NAMES = new Set(['', '.', 'blobs', 'blobs/sha256']);
const TYPE_NAMES: Record<string, string> = { '1': 'a hard link', '2': 'a symbolic link', '3': 'a character device', '4': 'a block device', '6': 'a FIFO', '7': 'a contiguous file', L: 'a GNU long name', K: 'a GNU long link name', S: 'a sparse file' };

interface Entry {
  /** Offset of the data. */
  offset: number;
  size: number;
}

interface IndexDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  [k: string]: unknown;
}

interface Layout {
  blobs: Map<string, Entry>;
  index: IndexDescriptor[];
  /** Where the next entry goes: right after the last committed entry. */
  end: number;
  hasLayoutFile: boolean;
}

export interface TarArchiveOptions {
  /** Absolute path of the tar file. Required. */
  file: string;
  /** Refuse writes (no lock file, no file created). Default false. */
  readOnly?: boolean;
  /** close() compacts when dead bytes exceed this share of the file. Default 0.5. */
  compactRatio?: number;
}

/** Opens (reading and validating) a tar OCI layout; a missing file is an empty one until written. */
export async function openTarArchive(opts: TarArchiveOptions): Promise<TarArchive> {
  const a = new TarArchive(opts);
  await a.load();
  return a;
}

export class TarArchive implements OciBackend {
  readonly where: string;
  private readonly file: string;
  private readonly lockFile: string;
  private fd: FileHandle | undefined;
  private layout: Layout = { blobs: new Map(), index: [], end: 0, hasLayoutFile: false };
  private locked = false;
  private dirty = false;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly opts: TarArchiveOptions) {
    if (!path.isAbsolute(opts.file)) throw new KkError('CONFIG_INVALID', `the tar store needs an absolute path, got "${opts.file}"`);
    this.file = opts.file;
    this.lockFile = `${opts.file}.lock`;
    this.where = `tar ${opts.file}`;
  }

  async load(): Promise<void> {
    await this.fd?.close();
    this.fd = undefined;
    try {
      this.fd = await open(this.file, this.locked ? 'r+' : 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new KkError('BACKEND', `${this.where}: ${(err as Error).message}`, { cause: err });
      this.layout = { blobs: new Map(), index: [], end: 0, hasLayoutFile: false };
      return;
    }
    this.layout = await scanArchive(this.fd, this.where);
  }

  /** Serializes appends and index changes of this instance. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async writable(): Promise<FileHandle> {
    if (this.opts.readOnly) throw new KkError('FORBIDDEN', `${this.where} is opened read-only`);
    if (this.closed) throw new TypeError('tar archive used after close()');
    if (!this.locked) {
      await mkdir(path.dirname(this.file), { recursive: true });
      await takeLock(this.lockFile, this.where);
      this.locked = true;
      // Another writer may have appended since we read it: read it again under the lock.
      try {
        await this.load();
      } catch (err) {
        await this.releaseLock();
        throw err;
      }
      if (!this.fd) {
        this.fd = await open(this.file, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o644);
      }
      // Cut off what an interrupted writer left after the last complete index.json.
      await this.fd.truncate(this.layout.end);
      if (!this.layout.hasLayoutFile) {
        // A new archive is committed (with an empty index) before anything else goes in, so a
        // file without a complete index.json is always damaged, never a first write in progress.
        await this.append('oci-layout', LAYOUT);
        this.layout.hasLayoutFile = true;
        await this.commitIndex();
      }
    }
    return this.fd!;
  }

  private async append(name: string, data: Buffer): Promise<Entry> {
    const fd = this.fd!;
    const header = tarHeader(name, data.length);
    const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
    const at = this.layout.end;
    await writeFully(fd, Buffer.concat([header, data, Buffer.alloc(pad)]), at);
    this.layout.end = at + BLOCK + data.length + pad;
    return { offset: at + BLOCK, size: data.length };
  }

  async blobSize(digest: string): Promise<number | undefined> {
    return this.layout.blobs.get(digest)?.size;
  }

  async getBlob(digest: string, range?: ByteRange): Promise<Buffer | undefined> {
    const e = this.layout.blobs.get(digest);
    if (!e || !this.fd) return undefined;
    if (range) {
      const start = Math.min(range.start, e.size);
      const end = Math.min(range.end + 1, e.size);
      return readAt(this.fd, e.offset + start, Math.max(0, end - start));
    }
    const bytes = await readAt(this.fd, e.offset, e.size);
    if (sha256(bytes) !== digest) {
      throw new KkError('CHUNK_CORRUPT', `${this.where}: blobs/sha256/${digest.slice(7)} does not match its digest`, { hint: 'the archive is damaged or was tampered with: export it again', details: { digest } });
    }
    return bytes;
  }

  putBlob(digest: string, data: Buffer): Promise<void> {
    return this.serial(async () => {
      await this.writable();
      if (this.layout.blobs.has(digest)) return;
      if (sha256(data) !== digest) throw new TypeError(`blob bytes do not match ${digest}`);
      this.layout.blobs.set(digest, await this.append(`blobs/sha256/${digest.slice(7)}`, data));
    });
  }

  async getManifest(reference: string): Promise<{ digest: string; mediaType: string; body: Buffer } | undefined> {
    const tagged = reference.startsWith('sha256:') ? undefined : this.layout.index.find((d) => d.annotations?.[REF_NAME] === reference);
    const digest = tagged ? tagged.digest : reference.startsWith('sha256:') ? reference : undefined;
    if (!digest) {
      // A miss does no I/O: give the event loop a turn so a polling caller never starves writes.
      await new Promise((r) => setImmediate(r));
      return undefined;
    }
    const body = await this.getBlob(digest);
    if (!body) {
      if (tagged) throw new KkError('STORE_INVALID', `${this.where}: index.json names ${digest}, which the archive does not hold`);
      return undefined;
    }
    let mediaType = tagged?.mediaType;
    if (!mediaType) {
      try {
        mediaType = String((JSON.parse(body.toString('utf8')) as { mediaType?: string }).mediaType ?? '');
      } catch {
        mediaType = '';
      }
    }
    return { digest, mediaType, body };
  }

  async putManifest(reference: string, body: Buffer, mediaType: string): Promise<string> {
    const digest = sha256(body);
    await this.putBlob(digest, body);
    if (reference.startsWith('sha256:')) return digest;
    await this.serial(async () => {
      const i = this.layout.index.findIndex((d) => d.annotations?.[REF_NAME] === reference);
      const desc: IndexDescriptor = { mediaType, digest, size: body.length, annotations: { [REF_NAME]: reference } };
      if (i >= 0) {
        this.layout.index[i] = desc;
      } else {
        this.layout.index.push(desc);
      }
      this.dirty = true;
    });
    return digest;
  }

  async deleteManifest(digest: string): Promise<boolean> {
    await this.serial(async () => {
      await this.writable();
      const before = this.layout.index.length;
      this.layout.index = this.layout.index.filter((d) => d.digest !== digest);
      if (this.layout.index.length !== before) this.dirty = true;
    });
    return true;
  }

  async *tags(): AsyncGenerator<string> {
    for (const d of [...this.layout.index]) {
      const name = d.annotations?.[REF_NAME];
      if (name) yield name;
    }
  }

  /** Appends the index (then the end blocks) when it changed and fsyncs: durable from here on. */
  flush(): Promise<void> {
    return this.serial(async () => {
      if (!this.dirty) return;
      await this.writable();
      await this.commitIndex();
    });
  }

  private async commitIndex(): Promise<void> {
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX_MEDIA, manifests: this.layout.index }));
    await this.append('index.json', index);
    await writeFully(this.fd!, Buffer.alloc(2 * BLOCK), this.layout.end);
    await this.fd!.sync();
    this.dirty = false;
  }

  /** Rewrites the archive with only what index.json reaches, renamed over the old file. */
  async compact(): Promise<{ before: number; after: number }> {
    await this.flush();
    return this.serial(async () => {
      await this.writable();
      const before = this.layout.end + 2 * BLOCK;
      const live = await this.reachable();
      const tmp = `${this.file}.tmp-${process.pid}-${Date.now()}`;
      const out = await open(tmp, 'wx', 0o644);
      const blobs = new Map<string, Entry>();
      let at = 0;
      const put = async (name: string, data: Buffer) => {
        const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
        await writeFully(out, Buffer.concat([tarHeader(name, data.length), data, Buffer.alloc(pad)]), at);
        const e = { offset: at + BLOCK, size: data.length };
        at += BLOCK + data.length + pad;
        return e;
      };
      try {
        await put('oci-layout', LAYOUT);
        for (const digest of live) {
          const e = this.layout.blobs.get(digest)!;
          // Copy in 8 MiB pieces: packs are ~16 MiB, other blobs small.
          const header = tarHeader(`blobs/sha256/${digest.slice(7)}`, e.size);
          await writeFully(out, header, at);
          for (let off = 0; off < e.size; off += 8 << 20) {
            const piece = await readAt(this.fd!, e.offset + off, Math.min(8 << 20, e.size - off));
            await writeFully(out, piece, at + BLOCK + off);
          }
          const pad = (BLOCK - (e.size % BLOCK)) % BLOCK;
          if (pad) await writeFully(out, Buffer.alloc(pad), at + BLOCK + e.size);
          blobs.set(digest, { offset: at + BLOCK, size: e.size });
          at += BLOCK + e.size + pad;
        }
        await put('index.json', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX_MEDIA, manifests: this.layout.index })));
        const end = at;
        await writeFully(out, Buffer.alloc(2 * BLOCK), at);
        await out.sync();
        await out.close();
        await rename(tmp, this.file);
        await this.fd!.close();
        this.fd = await open(this.file, 'r+');
        this.layout = { blobs, index: this.layout.index, end, hasLayoutFile: true };
        return { before, after: end + 2 * BLOCK };
      } catch (err) {
        await out.close().catch(() => undefined);
        await rm(tmp, { force: true });
        throw err;
      }
    });
  }

  /** Blobs reachable from index.json, in a stable order. */
  private async reachable(): Promise<string[]> {
    const seen = new Set<string>();
    const visit = async (digest: string, isManifest: boolean) => {
      if (seen.has(digest) || !this.layout.blobs.has(digest)) return;
      seen.add(digest);
      if (!isManifest) return;
      const body = await this.getBlob(digest);
      const m = JSON.parse(body!.toString('utf8')) as { config?: { digest: string }; layers?: { digest: string }[]; manifests?: { digest: string }[]; subject?: { digest: string } };
      if (m.config) await visit(m.config.digest, false);
      for (const l of m.layers ?? []) await visit(l.digest, false);
      for (const c of m.manifests ?? []) await visit(c.digest, true);
    };
    for (const d of this.layout.index) await visit(d.digest, true);
    return [...seen];
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
      // Dead bytes: deleted or replaced objects, and every index.json but the last.
      if (this.locked) {
        const live = await this.reachable();
        const liveBytes = live.reduce((n, d) => n + this.layout.blobs.get(d)!.size + BLOCK, 0);
        if (this.layout.end > 1 << 20 && liveBytes < this.layout.end * (1 - (this.opts.compactRatio ?? 0.5))) await this.compact();
      }
    } finally {
      this.closed = true;
      await this.fd?.close().catch(() => undefined);
      await this.releaseLock();
    }
  }

  private async releaseLock(): Promise<void> {
    if (!this.locked) return;
    this.locked = false;
    await unlink(this.lockFile).catch(() => undefined);
  }
}

// ---- reading ----

/**
 * Reads every header; refuses anything but the layout's regular files. A clean end (zero block)
 * commits everything; a truncated or garbled tail commits only up to the last complete index.json.
 */
async function scanArchive(fd: FileHandle, where: string): Promise<Layout> {
  const size = (await fd.stat()).size;
  const refuse = (why: string, code: 'STORE_INVALID' | 'UNSAFE_PATH' = 'STORE_INVALID') =>
    new KkError(code, `${where} is not a kk tar store: ${why}`, { hint: 'only an OCI image layout tar (kk export, skopeo copy oci-archive:) is accepted; nothing was extracted or written' });
  let blobs = new Map<string, Entry>();
  let indexEntry: Entry | undefined;
  let hasLayoutFile = false;
  let committed: { blobs: Map<string, Entry>; index: Entry | undefined; end: number; hasLayoutFile: boolean } | undefined;
  let pos = 0;
  let pax: Record<string, string> = {};
  let clean = false;
  for (;;) {
    if (pos + BLOCK > size) break;
    const h = await readAt(fd, pos, BLOCK);
    if (h.every((b) => b === 0)) {
      clean = true;
      break;
    }
    if (!checksumOk(h)) break;
    const type = String.fromCharCode(h[156]!) === '\0' ? '0' : String.fromCharCode(h[156]!);
    let entrySize = parseSize(h.subarray(124, 136));
    if (entrySize === undefined) throw refuse(`a header at byte ${pos} has a malformed size`);
    if (pax.size !== undefined) {
      if (!/^\d+$/.test(pax.size)) throw refuse(`a PAX size at byte ${pos} is malformed`);
      entrySize = Number(pax.size);
    }
    const dataAt = pos + BLOCK;
    const next = dataAt + Math.ceil(entrySize / BLOCK) * BLOCK;
    if (dataAt + entrySize > size) break;
    if (type === 'x' || type === 'g') {
      const records = parsePax(await readAt(fd, dataAt, entrySize));
      if (!records) throw refuse(`a PAX header at byte ${pos} is malformed`);
      if (type === 'g' && (records.path !== undefined || records.size !== undefined)) throw refuse('a global PAX header sets a path or size');
      if (type === 'x') pax = records;
      pos = next;
      continue;
    }
    const raw = pax.path ?? ustarName(h);
    pax = {};
    const name = raw.replace(/^\.\//, '').replace(/\/$/, '');
    if (raw.includes('\0') || raw.includes('\\') || name.split('/').some((s) => s === '..') || raw.startsWith('/')) throw refuse(`entry "${printable(raw)}" would escape the archive root`, 'UNSAFE_PATH');
    if (type !== '0' && type !== '5') throw refuse(`entry "${printable(raw)}" is ${TYPE_NAMES[type] ?? `of tar type "${printable(type)}"`}`);
    if (type === '5') {
      if (!DIR_NAMES.has(name)) throw refuse(`directory "${printable(raw)}" is not part of an OCI layout`);
      pos = next;
      continue;
    }
    const blob = BLOB_NAME.exec(name);
    if (blob) {
      const digest = `sha256:${blob[1]}`;
      if (blobs.has(digest)) throw refuse(`"${name}" appears twice`);
      blobs.set(digest, { offset: dataAt, size: entrySize });
    } else if (name === 'index.json') {
      if (entrySize > 64 << 20) throw refuse('index.json is larger than 64 MiB');
      indexEntry = { offset: dataAt, size: entrySize };
      committed = { blobs: new Map(blobs), index: indexEntry, end: next, hasLayoutFile };
    } else if (name === 'oci-layout') {
      if (hasLayoutFile) throw refuse('"oci-layout" appears twice');
      hasLayoutFile = true;
    } else {
      throw refuse(`entry "${printable(raw)}" is not part of an OCI layout (oci-layout, index.json, blobs/sha256/<hex>)`);
    }
    pos = next;
  }
  let end = pos;
  if (!clean) {
    // An interrupted append: keep what the last complete index.json committed.
    if (!committed) throw refuse(pos === 0 && size === 0 ? 'the file is empty' : `it is truncated or damaged at byte ${pos} before any complete index.json`);
    ({ blobs, index: indexEntry, end, hasLayoutFile } = committed);
  }
  let index: IndexDescriptor[] = [];
  if (indexEntry) {
    let parsed: { schemaVersion?: unknown; manifests?: unknown };
    try {
      parsed = JSON.parse((await readAt(fd, indexEntry.offset, indexEntry.size)).toString('utf8'));
    } catch (err) {
      throw refuse(`index.json is not JSON (${(err as Error).message})`);
    }
    if (parsed.schemaVersion !== 2 || !Array.isArray(parsed.manifests)) throw refuse('index.json is not an OCI image index');
    index = parsed.manifests as IndexDescriptor[];
    for (const d of index) {
      if (typeof d?.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(d.digest)) throw refuse('index.json has a descriptor without a sha256 digest');
      const e = blobs.get(d.digest);
      if (!e || e.size !== d.size) throw refuse(`index.json names ${d.digest}, which the archive ${e ? `holds with ${e.size} bytes, not ${d.size}` : 'does not hold (truncated?)'}`);
    }
  } else if (blobs.size > 0) {
    throw refuse('it has blobs but no index.json');
  }
  return { blobs, index, end, hasLayoutFile };
}

function ustarName(h: Buffer): string {
  const name = cString(h.subarray(0, 100));
  const magic = h.toString('latin1', 257, 262);
  const prefix = magic === 'ustar' ? cString(h.subarray(345, 500)) : '';
  return prefix ? `${prefix}/${name}` : name;
}

function cString(b: Buffer): string {
  const z = b.indexOf(0);
  return b.toString('utf8', 0, z < 0 ? b.length : z);
}

function parseSize(field: Buffer): number | undefined {
  if (field[0]! & 0x80) {
    // base-256 (GNU / star) for sizes beyond 8 GiB
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return Number.isSafeInteger(n) ? n : undefined;
  }
  const s = field.toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (!/^[0-7]*$/.test(s)) return undefined;
  return s === '' ? 0 : parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  const stored = parseInt(h.toString('latin1', 148, 156).replace(/[\0 ]+$/, '').trim(), 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  return stored === sum;
}

function parsePax(data: Buffer): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break;
    const space = data.indexOf(0x20, pos);
    if (space < 0) return undefined;
    const len = Number(data.toString('latin1', pos, space));
    if (!Number.isInteger(len) || len <= space - pos || pos + len > data.length) return undefined;
    const record = data.toString('utf8', space + 1, pos + len - 1);
    const eq = record.indexOf('=');
    if (eq < 0) return undefined;
    out[record.slice(0, eq)] = record.slice(eq + 1);
    pos += len;
  }
  return out;
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
}

// ---- writing ----

function tarHeader(name: string, size: number): Buffer {
  if (Buffer.byteLength(name) > 100) throw new TypeError(`tar entry name too long: ${name}`);
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 'utf8');
  h.write('0000644\0', 100, 'latin1');
  h.write('0000000\0', 108, 'latin1');
  h.write('0000000\0', 116, 'latin1');
  if (size < 8 ** 11) {
    h.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  } else {
    h[124] = 0x80;
    let n = size;
    for (let i = 135; i > 124; i--) {
      h[i] = n % 256;
      n = Math.floor(n / 256);
    }
  }
  h.write(`${Math.floor(Date.now() / 1000).toString(8).padStart(11, '0')}\0`, 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write('0', 156, 'latin1');
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return h;
}

async function readAt(fd: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fd.read(buf, got, length - got, offset + got);
    if (bytesRead === 0) throw new KkError('STORE_INVALID', `tar archive ended early at byte ${offset + got}`);
    got += bytesRead;
  }
  return buf;
}

async function writeFully(fd: FileHandle, data: Buffer, offset: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fd.write(data, done, data.length - done, offset + done);
    done += bytesWritten;
  }
}

// ---- the lock file ----

async function takeLock(lockFile: string, where: string): Promise<void> {
  const body = JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lockFile, body, { flag: 'wx', mode: 0o644 });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new KkError('BACKEND', `${where}: cannot create the lock file ${lockFile}: ${(err as Error).message}`, { cause: err });
    }
    let holder: { pid?: number; host?: string; since?: string } = {};
    try {
      holder = JSON.parse(await readFile(lockFile, 'utf8'));
    } catch {
      // half-written or removed meanwhile: judged by its age below
    }
    const age = Date.now() - (await stat(lockFile).then((s) => s.mtimeMs, () => Date.now()));
    const dead = holder.host === hostname() && typeof holder.pid === 'number' && !alive(holder.pid);
    if (attempt === 0 && (dead || (holder.pid === undefined && age > 60_000))) {
      await unlink(lockFile).catch(() => undefined);
      continue;
    }
    throw new KkError('LOCKED', `${where} is being written by ${holder.pid ? `process ${holder.pid} on ${holder.host ?? '?'} since ${holder.since ?? '?'}` : 'another process'}`, {
      hint: `wait for it to finish; if no kk process writes it any more, remove ${lockFile}`,
    });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function sha256(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}
