// Packs and chunk maps (DESIGN 11, format in ../PACKS.md): many small chunk objects stored as one
// object, and the per-version binary index that says where each packed chunk lives.
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { brotliCompress, brotliDecompress, constants as z } from 'node:zlib';
import { type Digest, assertDigest, digestHex } from './digest.js';
import { KkError } from './errors.js';
import { type CompressionPolicy, ENCODING_BROTLI, ENCODING_RAW, encodeChunkObject } from './hash/codec.js';

const brotliCompressAsync = promisify(brotliCompress);
const brotliDecompressAsync = promisify(brotliDecompress);

export const PACKS_PREFIX = 'packs/';
export const CHUNKMAPS_PREFIX = 'chunkmaps/';

export function packKey(d: Digest): string {
  const hex = digestHex(d);
  return `${PACKS_PREFIX}${hex.slice(0, 2)}/${hex}`;
}

export function chunkMapKey(d: Digest): string {
  const hex = digestHex(d);
  return `${CHUNKMAPS_PREFIX}${hex.slice(0, 2)}/${hex}`;
}

/** Which chunks a store keeps in packs (kk-store.json `packs`); absent: loose chunks only. */
export interface PackPolicy {
  /** `small`: chunks below `below` bytes (uncompressed) are packed; `all`: every chunk is. */
  mode: 'small' | 'all';
  /** Only for `small`. */
  below?: number;
  /** Pack size a writer flushes at. */
  target: number;
  /**
   * Frames (PACKS.md "Frames"): packed chunks below `below` bytes are concatenated raw, about
   * `target` bytes of them compressed together. Absent: the defaults; `false`: no frames (every
   * chunk map stays format 1).
   */
  frames?: FramePolicy | false;
}

export interface FramePolicy {
  /** Packed chunks below this many bytes (uncompressed) go into frames. */
  below: number;
  /** Raw bytes a frame is compressed at. */
  target: number;
  /** Brotli quality of frames; absent: 5 (PACKS.md "Frames" measures it against the store's level). */
  level?: number;
}

export const DEFAULT_FRAME_POLICY: FramePolicy = { below: 64 * 1024, target: 1024 * 1024 };
export const DEFAULT_FRAME_LEVEL = 5;
/** A frame never decodes to more than this (a reader's bound against damaged frames). */
export const FRAME_RAW_MAX = 16 * 1024 * 1024;

/** The frame policy in force under `policy` (undefined: no frames). */
export function framePolicy(policy: PackPolicy | undefined): FramePolicy | undefined {
  if (!policy || policy.frames === false) return undefined;
  return policy.frames ?? DEFAULT_FRAME_POLICY;
}

export const DEFAULT_PACK_TARGET = 16 * 1024 * 1024;
export const DEFAULT_PACK_POLICY: PackPolicy = { mode: 'small', below: 1024 * 1024, target: DEFAULT_PACK_TARGET };
export const ALL_PACKS_POLICY: PackPolicy = { mode: 'all', target: DEFAULT_PACK_TARGET };

/** Whether a chunk of `size` uncompressed bytes goes into a pack under `policy`. */
export function packsChunk(policy: PackPolicy | undefined, size: number): boolean {
  if (!policy) return false;
  return policy.mode === 'all' || size < (policy.below ?? 0);
}

export function assertPackPolicy(p: unknown): asserts p is PackPolicy {
  const o = p as PackPolicy;
  const ok =
    !!o &&
    (o.mode === 'all' || (o.mode === 'small' && Number.isSafeInteger(o.below) && o.below! > 0)) &&
    Number.isSafeInteger(o.target) &&
    o.target >= 64 * 1024 &&
    o.target <= 1024 * 1024 * 1024 &&
    (o.frames === undefined ||
      o.frames === false ||
      (!!o.frames &&
        Number.isSafeInteger(o.frames.below) &&
        Number.isSafeInteger(o.frames.target) &&
        o.frames.below > 0 &&
        o.frames.target >= o.frames.below &&
        o.frames.target + o.frames.below <= FRAME_RAW_MAX &&
        (o.frames.level === undefined || (Number.isInteger(o.frames.level) && o.frames.level >= 0 && o.frames.level <= 11))));
  if (!ok) throw new KkError('STORE_INVALID', `unsupported pack policy ${JSON.stringify(p)}`);
}

/** Where one packed chunk lives. */
export interface ChunkMapEntry {
  digest: Digest;
  pack: Digest;
  /** Offset of the stored chunk object (or of its frame) inside the pack. */
  offset: number;
  /** Length of the stored object or frame (header byte included). */
  length: number;
  /** Uncompressed size of the chunk. */
  size: number;
  /** Set when the chunk lives in a frame: its offset inside the decoded frame (format 2). */
  inner?: number;
}

const MAGIC = Buffer.from('KKCM');
const HEADER = 16;
const ENTRY_V1 = 48;
const ENTRY_V2 = 52;
/** `inner` of a format-2 entry that is a chunk object of its own. */
const NOT_FRAMED = 0xffffffff;

/** A decoded chunk map: lookups by binary search over the sorted entries. */
export class ChunkMap {
  private constructor(
    readonly digest: Digest,
    readonly packs: Digest[],
    private readonly bytes: Buffer,
    readonly size: number,
    /** 1: entries are chunk objects; 2: entries may point into frames. */
    readonly format: 1 | 2,
  ) {}

  private get entrySize(): number {
    return this.format === 1 ? ENTRY_V1 : ENTRY_V2;
  }

  /** Parse and validate; `expected` (the key's digest) is checked against the bytes. */
  static decode(bytes: Uint8Array, expected?: Digest): ChunkMap {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const digest = `sha256:${createHash('sha256').update(buf).digest('hex')}` as Digest;
    const bad = (why: string) => new KkError('STORE_INVALID', `chunk map ${expected ?? digest} is damaged: ${why}`, { hint: 'run `kk fsck --store <store>`' });
    if (expected && digest !== expected) throw bad('its bytes do not match its name');
    if (buf.length < HEADER || !buf.subarray(0, 4).equals(MAGIC)) throw bad('not a kk chunk map');
    const format = buf[4];
    if (format !== 1 && format !== 2) {
      throw new KkError('STORE_INVALID', `chunk map ${expected ?? digest} has format ${format}, which this kk does not read`, { hint: 'upgrade kk on this machine' });
    }
    const ENTRY = format === 1 ? ENTRY_V1 : ENTRY_V2;
    const p = buf.readUInt32BE(8);
    const n = buf.readUInt32BE(12);
    if (buf.length !== HEADER + 32 * p + ENTRY * n) throw bad('wrong length');
    const packs: Digest[] = [];
    for (let i = 0; i < p; i++) {
      const raw = buf.subarray(HEADER + 32 * i, HEADER + 32 * (i + 1));
      if (i > 0 && Buffer.compare(buf.subarray(HEADER + 32 * (i - 1), HEADER + 32 * i), raw) >= 0) throw bad('pack list not sorted');
      packs.push(`sha256:${raw.toString('hex')}` as Digest);
    }
    const base = HEADER + 32 * p;
    const entries = buf.subarray(base);
    for (let i = 0; i < n; i++) {
      const e = i * ENTRY;
      if (i > 0 && Buffer.compare(entries.subarray(e - ENTRY, e - ENTRY + 32), entries.subarray(e, e + 32)) >= 0) throw bad('entries not sorted');
      if (entries.readUInt32BE(e + 32) >= p) throw bad('pack index out of range');
      if (entries.readUInt32BE(e + 40) < 1) throw bad('empty chunk object');
      if (format === 2) {
        const inner = entries.readUInt32BE(e + 48);
        if (inner !== NOT_FRAMED && inner + entries.readUInt32BE(e + 44) > FRAME_RAW_MAX) throw bad('chunk outside its frame');
      }
    }
    return new ChunkMap(digest, packs, entries, n, format);
  }

  private entryAt(i: number): ChunkMapEntry {
    const e = i * this.entrySize;
    const b = this.bytes;
    const out: ChunkMapEntry = {
      digest: `sha256:${b.subarray(e, e + 32).toString('hex')}` as Digest,
      pack: this.packs[b.readUInt32BE(e + 32)]!,
      offset: b.readUInt32BE(e + 36),
      length: b.readUInt32BE(e + 40),
      size: b.readUInt32BE(e + 44),
    };
    if (this.format === 2) {
      const inner = b.readUInt32BE(e + 48);
      if (inner !== NOT_FRAMED) out.inner = inner;
    }
    return out;
  }

  /** Where `d` lives, or undefined if this version has it loose (or not at all). */
  find(d: Digest): ChunkMapEntry | undefined {
    const key = Buffer.from(digestHex(d), 'hex');
    let lo = 0;
    let hi = this.size - 1;
    const size = this.entrySize;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = Buffer.compare(this.bytes.subarray(mid * size, mid * size + 32), key);
      if (c === 0) return this.entryAt(mid);
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  *entries(): Generator<ChunkMapEntry> {
    for (let i = 0; i < this.size; i++) yield this.entryAt(i);
  }
}

/**
 * Encode entries (any order, duplicates of one digest collapse) as a chunk map: format 1 when
 * no entry lies in a frame (what readers before frames understand), else format 2.
 */
export function encodeChunkMap(entries: Iterable<ChunkMapEntry>): { bytes: Buffer; digest: Digest } {
  const byDigest = new Map<string, ChunkMapEntry>();
  for (const e of entries) {
    assertDigest(e.digest, 'chunk digest');
    assertDigest(e.pack, 'pack digest');
    if (!byDigest.has(e.digest)) byDigest.set(e.digest, e);
  }
  const list = [...byDigest.values()].sort((a, b) => (a.digest < b.digest ? -1 : 1));
  const packs = [...new Set(list.map((e) => e.pack))].sort();
  const packIndex = new Map(packs.map((p, i) => [p, i]));
  const format = list.some((e) => e.inner !== undefined) ? 2 : 1;
  const ENTRY = format === 1 ? ENTRY_V1 : ENTRY_V2;
  const out = Buffer.alloc(HEADER + 32 * packs.length + ENTRY * list.length);
  MAGIC.copy(out, 0);
  out[4] = format;
  out.writeUInt32BE(packs.length, 8);
  out.writeUInt32BE(list.length, 12);
  packs.forEach((p, i) => out.write(digestHex(p), HEADER + 32 * i, 'hex'));
  const base = HEADER + 32 * packs.length;
  list.forEach((e, i) => {
    const o = base + i * ENTRY;
    out.write(digestHex(e.digest), o, 'hex');
    out.writeUInt32BE(packIndex.get(e.pack)!, o + 32);
    out.writeUInt32BE(e.offset, o + 36);
    out.writeUInt32BE(e.length, o + 40);
    out.writeUInt32BE(e.size, o + 44);
    if (format === 2) out.writeUInt32BE(e.inner ?? NOT_FRAMED, o + 48);
  });
  return { bytes: out, digest: `sha256:${createHash('sha256').update(out).digest('hex')}` as Digest };
}

export function decodeChunkMap(bytes: Uint8Array, expected?: Digest): ChunkMap {
  return ChunkMap.decode(bytes, expected);
}

/**
 * Collects chunk objects into packs of about `target` bytes. `add` returns the pack bytes to
 * store when one is full (the caller uploads it and reports the digest back through the
 * entries it receives); `finish` returns the last, partial pack.
 */
export class PackWriter {
  /** The pack being filled: objects are copied in (the buffers they came in are free at once). */
  private buf: Buffer | undefined;
  private pending: { digest: Digest; offset: number; length: number; size: number; inner?: number }[] = [];
  private bytes = 0;
  private readonly seen = new Set<Digest>();

  constructor(readonly target: number) {}

  /** Buffered bytes not yet handed out as a pack. */
  get buffered(): number {
    return this.bytes;
  }

  /** Add a chunk object; a full pack comes back once the target is reached. */
  add(digest: Digest, object: Uint8Array, size: number): SealedPack | undefined {
    if (this.seen.has(digest)) return undefined;
    this.seen.add(digest);
    this.pending.push({ digest, offset: this.bytes, length: object.length, size });
    this.append(object);
    return this.bytes >= this.target ? this.seal() : undefined;
  }

  /**
   * Add a frame object (PACKS.md "Frames"): every member's entry points at the frame and says
   * where the member starts inside the decoded frame. Members already added are skipped.
   */
  addFrame(object: Uint8Array, members: readonly { digest: Digest; size: number; inner: number }[]): SealedPack | undefined {
    const offset = this.bytes;
    let added = 0;
    for (const m of members) {
      if (this.seen.has(m.digest)) continue;
      this.seen.add(m.digest);
      this.pending.push({ digest: m.digest, offset, length: object.length, size: m.size, inner: m.inner });
      added++;
    }
    if (!added) return undefined;
    this.append(object);
    return this.bytes >= this.target ? this.seal() : undefined;
  }

  private append(object: Uint8Array): void {
    const need = this.bytes + object.length;
    if (!this.buf || this.buf.length < need) {
      // Sized for a whole pack up front (pages are touched only as they fill); grows rarely.
      const next = Buffer.allocUnsafe(Math.max(need, this.target + 64 * 1024, (this.buf?.length ?? 0) * 2));
      if (this.buf) this.buf.copy(next, 0, 0, this.bytes);
      this.buf = next;
    }
    this.buf.set(object, this.bytes);
    this.bytes = need;
  }

  /** The last pack, if anything is buffered. */
  finish(): SealedPack | undefined {
    return this.bytes ? this.seal() : undefined;
  }

  private seal(): SealedPack {
    const bytes = this.buf!.subarray(0, this.bytes);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;
    const entries = this.pending.map((p) => ({ ...p, pack: digest }));
    this.buf = undefined;
    this.pending = [];
    this.bytes = 0;
    return { digest, bytes, entries };
  }
}

export interface SealedPack {
  digest: Digest;
  bytes: Buffer;
  entries: ChunkMapEntry[];
}

/** Bits per byte above which a sample is taken as already compressed or random (as codec.ts). */
const INCOMPRESSIBLE_ENTROPY = 7.9;
const ENTROPY_SAMPLE = 4096;

/** Order-0 entropy of up to 4 KiB from the middle of `raw`, bits per byte. */
function sampleEntropy(raw: Uint8Array): number {
  const n = Math.min(ENTROPY_SAMPLE, raw.length);
  const off = (raw.length - n) >> 1;
  const counts = new Uint32Array(256);
  for (let i = off; i < off + n; i++) counts[raw[i]!]!++;
  let h = 0;
  for (let i = 0; i < 256; i++) {
    const c = counts[i]!;
    if (c) {
      const p = c / n;
      h -= p * Math.log2(p);
    }
  }
  return h;
}

function withHeader(encoding: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(payload.length + 1);
  out[0] = encoding;
  out.set(payload, 1);
  return out;
}

/**
 * A frame's stored object: brotli (at `level`, else the store's) when it saves at least
 * `minSaving`, else undefined (the caller stores the members as raw objects of their own).
 * Compresses off the main thread (zlib's thread pool).
 */
export async function encodeFrame(raw: Uint8Array, policy: CompressionPolicy, level = policy.level): Promise<Buffer | undefined> {
  if (policy.algorithm !== 'brotli') return undefined;
  const packed = await brotliCompressAsync(raw, {
    // A window no larger than the frame: the same output, less encoder memory.
    params: { [z.BROTLI_PARAM_QUALITY]: level, [z.BROTLI_PARAM_SIZE_HINT]: raw.length, [z.BROTLI_PARAM_LGWIN]: Math.max(16, Math.min(22, Math.ceil(Math.log2(raw.length + 1)))) },
  });
  return packed.length <= raw.length * (1 - policy.minSaving) ? withHeader(ENCODING_BROTLI, packed) : undefined;
}

/** The raw bytes of a stored frame; throws on an unknown header or a bad payload. */
export async function decodeFrame(object: Uint8Array): Promise<Buffer> {
  if (object.length === 0) throw new Error('empty frame');
  const payload = object.subarray(1);
  if (object[0] === ENCODING_RAW) return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (object[0] === ENCODING_BROTLI) return brotliDecompressAsync(payload, { maxOutputLength: FRAME_RAW_MAX });
  throw new Error(`unknown frame encoding ${object[0]}`);
}

/** The raw bytes of a member of a decoded frame, as a raw chunk object (header 0). */
export function frameMember(frame: Uint8Array, e: ChunkMapEntry): Buffer | undefined {
  const from = e.inner ?? 0;
  if (from + e.size > frame.length) return undefined;
  return withHeader(ENCODING_RAW, frame.subarray(from, from + e.size));
}

/**
 * What push (and anything else that writes packs) feeds chunks through: chunk objects go into
 * the pack as they are; small compressible chunks are collected raw into the open frame, which
 * is compressed as one object when it reaches the frame target (PACKS.md "Frames"). Holds at
 * most one open frame, the frames being compressed by callers awaiting `addRaw`, and one pack.
 */
export class PackAssembler {
  readonly writer: PackWriter;
  private readonly frames: FramePolicy | undefined;
  private members: { digest: Digest; size: number; inner: number }[] = [];
  private parts: Uint8Array[] = [];
  private raw = 0;
  private readonly queued = new Set<Digest>();

  constructor(
    policy: PackPolicy,
    private readonly compression: CompressionPolicy,
  ) {
    this.writer = new PackWriter(policy.target);
    this.frames = compression.algorithm === 'brotli' ? framePolicy(policy) : undefined;
  }

  /** Whether a packed chunk of `size` bytes goes to `addRaw` (into a frame) rather than `addObject`. */
  framed(size: number): boolean {
    return !!this.frames && size < this.frames.below;
  }

  /** A chunk object (encoded as stored loose) of its own; full packs come back. */
  addObject(digest: Digest, object: Uint8Array, size: number): SealedPack[] {
    if (this.queued.has(digest)) return [];
    this.queued.add(digest);
    const full = this.writer.add(digest, object, size);
    return full ? [full] : [];
  }

  /** The raw bytes of a small chunk: into the open frame, or alone when they look incompressible. */
  async addRaw(digest: Digest, raw: Uint8Array, size: number): Promise<SealedPack[]> {
    if (this.queued.has(digest)) return [];
    if (raw.length >= 512 && sampleEntropy(raw) >= INCOMPRESSIBLE_ENTROPY) return this.addObject(digest, withHeader(ENCODING_RAW, raw), size);
    this.queued.add(digest);
    this.members.push({ digest, size, inner: this.raw });
    this.parts.push(raw);
    this.raw += raw.length;
    return this.raw >= this.frames!.target ? this.sealFrame() : [];
  }

  /** Whatever is buffered, as packs (the open frame first). Call once every add has returned. */
  async finish(): Promise<SealedPack[]> {
    const out = this.raw ? await this.sealFrame() : [];
    const rest = this.writer.finish();
    if (rest) out.push(rest);
    return out;
  }

  private async sealFrame(): Promise<SealedPack[]> {
    const members = this.members;
    const raw = Buffer.concat(this.parts, this.raw);
    this.members = [];
    this.parts = [];
    this.raw = 0;
    const object = members.length > 1 ? await encodeFrame(raw, this.compression, this.frames!.level ?? DEFAULT_FRAME_LEVEL) : undefined;
    if (object) {
      const full = this.writer.addFrame(object, members);
      return full ? [full] : [];
    }
    // A lone member is encoded as any chunk; members that gain nothing together are stored raw.
    const out: SealedPack[] = [];
    for (const m of members) {
      const bytes = raw.subarray(m.inner, m.inner + m.size);
      const full = this.writer.add(m.digest, members.length === 1 ? encodeChunkObject(bytes, this.compression) : withHeader(ENCODING_RAW, bytes), m.size);
      if (full) out.push(full);
    }
    return out;
  }
}

/** Ranges in one pack closer than this are read as one. */
const COALESCE_GAP = 64 * 1024;
/** A coalesced read is at most this long. */
const COALESCE_MAX = 8 * 1024 * 1024;

/** Group entries by pack and merge neighbouring ranges: one range read per group. */
export function coalesceRanges(entries: ChunkMapEntry[]): { pack: Digest; start: number; end: number; entries: ChunkMapEntry[] }[] {
  const byPack = new Map<Digest, ChunkMapEntry[]>();
  for (const e of entries) {
    const list = byPack.get(e.pack);
    if (list) list.push(e);
    else byPack.set(e.pack, [e]);
  }
  const out: { pack: Digest; start: number; end: number; entries: ChunkMapEntry[] }[] = [];
  for (const [pack, list] of byPack) {
    list.sort((a, b) => a.offset - b.offset);
    let cur: (typeof out)[number] | undefined;
    for (const e of list) {
      const end = e.offset + e.length - 1;
      if (cur && e.offset - (cur.end + 1) <= COALESCE_GAP && end - cur.start + 1 <= COALESCE_MAX) {
        cur.end = Math.max(cur.end, end);
        cur.entries.push(e);
      } else {
        cur = { pack, start: e.offset, end, entries: [e] };
        out.push(cur);
      }
    }
  }
  return out;
}
