// Packs and chunk maps (DESIGN 11, format in ../PACKS.md): many small chunk objects stored as one
// object, and the per-version binary index that says where each packed chunk lives.
import { createHash } from 'node:crypto';
import { type Digest, assertDigest, digestHex } from './digest.js';
import { KkError } from './errors.js';

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
    o.target <= 1024 * 1024 * 1024;
  if (!ok) throw new KkError('STORE_INVALID', `unsupported pack policy ${JSON.stringify(p)}`);
}

/** Where one packed chunk lives. */
export interface ChunkMapEntry {
  digest: Digest;
  pack: Digest;
  /** Offset of the stored chunk object inside the pack. */
  offset: number;
  /** Length of the stored object (header byte included). */
  length: number;
  /** Uncompressed size of the chunk. */
  size: number;
}

const MAGIC = Buffer.from('KKCM');
const HEADER = 16;
const ENTRY = 48;

/** A decoded chunk map: lookups by binary search over the sorted entries. */
export class ChunkMap {
  private constructor(
    readonly digest: Digest,
    readonly packs: Digest[],
    private readonly bytes: Buffer,
    readonly size: number,
  ) {}

  /** Parse and validate; `expected` (the key's digest) is checked against the bytes. */
  static decode(bytes: Uint8Array, expected?: Digest): ChunkMap {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const digest = `sha256:${createHash('sha256').update(buf).digest('hex')}` as Digest;
    const bad = (why: string) => new KkError('STORE_INVALID', `chunk map ${expected ?? digest} is damaged: ${why}`, { hint: 'run `kk fsck --store <store>`' });
    if (expected && digest !== expected) throw bad('its bytes do not match its name');
    if (buf.length < HEADER || !buf.subarray(0, 4).equals(MAGIC) || buf[4] !== 1) throw bad('not a kk chunk map (format 1)');
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
    }
    return new ChunkMap(digest, packs, entries, n);
  }

  private entryAt(i: number): ChunkMapEntry {
    const e = i * ENTRY;
    const b = this.bytes;
    return {
      digest: `sha256:${b.subarray(e, e + 32).toString('hex')}` as Digest,
      pack: this.packs[b.readUInt32BE(e + 32)]!,
      offset: b.readUInt32BE(e + 36),
      length: b.readUInt32BE(e + 40),
      size: b.readUInt32BE(e + 44),
    };
  }

  /** Where `d` lives, or undefined if this version has it loose (or not at all). */
  find(d: Digest): ChunkMapEntry | undefined {
    const key = Buffer.from(digestHex(d), 'hex');
    let lo = 0;
    let hi = this.size - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = Buffer.compare(this.bytes.subarray(mid * ENTRY, mid * ENTRY + 32), key);
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

/** Encode entries (any order, duplicates of one digest collapse) as a chunk map. */
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
  const out = Buffer.alloc(HEADER + 32 * packs.length + ENTRY * list.length);
  MAGIC.copy(out, 0);
  out[4] = 1;
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
  private parts: Uint8Array[] = [];
  private pending: { digest: Digest; offset: number; length: number; size: number }[] = [];
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
    this.parts.push(object);
    this.bytes += object.length;
    return this.bytes >= this.target ? this.seal() : undefined;
  }

  /** The last pack, if anything is buffered. */
  finish(): SealedPack | undefined {
    return this.bytes ? this.seal() : undefined;
  }

  private seal(): SealedPack {
    const bytes = Buffer.concat(this.parts, this.bytes);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;
    const entries = this.pending.map((p) => ({ ...p, pack: digest }));
    this.parts = [];
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
