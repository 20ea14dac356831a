// The manifest of one version (DESIGN 4): canonical JSON, its digest, validation on every read,
// and the renderings users check deployed trees with (seed meta.yaml, sha256sum lines).
import { createRequire } from 'node:module';
import { brotliCompressSync, brotliDecompressSync, constants as zlibConstants } from 'node:zlib';
import { type Digest, isDigest, sha256Digest, digestHex } from './digest.js';
import { KkError } from './errors.js';
import { assertAppName, assertProjectName } from './names.js';
import { assertSafePath, comparePaths } from './paths.js';
import { type ChunkingParams, assertChunkingParams } from './chunking.js';

export const MANIFEST_FORMAT = 'kk-manifest/1';

/** One chunk of a file: digest of its uncompressed bytes and its length. */
export type ChunkRef = [Digest, number];

export interface FileEntry {
  path: string;
  size: number;
  /** Permission bits only (no setuid/setgid), e.g. 0o644 = 420. */
  mode: number;
  /** Modification time in integer milliseconds since the epoch. */
  mtime: number;
  /** Digest of the whole file: `sha256sum` on the deployed file matches it. */
  sha256: Digest;
  /** Omitted when the file is a single chunk (then that chunk is `sha256`, `size`). */
  chunks?: ChunkRef[];
}

export interface DirEntry {
  path: string;
  mode: number;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  project: string;
  app: string;
  version: string;
  created: string;
  builder: string;
  git_commit: string;
  meta: Record<string, string>;
  chunking: ChunkingParams;
  dirs: DirEntry[];
  files: FileEntry[];
  /**
   * Optional transfer hints: chunk digest -> digest of the chunk (of the previous version) that
   * a stored delta rebuilds it from. A puller holding that base locally fetches the small delta
   * instead of the chunk; without it, or without the delta, it fetches the chunk.
   */
  deltas?: Record<string, Digest>;
  /**
   * Optional: the push's ignore rules (gitignore syntax). Paths they match in a deploy directory
   * belong to the host (runtime logs, uploads) and are protected on pull, together with the
   * puller's own rules.
   */
  ignore?: string[];
}

/** The top-level name kk stages under when the state dir is on another file system: never a version path. */
export const RESERVED_TOP_LEVEL = '.kk-staging';

/** sha256 of zero bytes: the only digest an empty file can have. */
export const EMPTY_DIGEST = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' as Digest;

/** The chunks of a file, whether or not the manifest spelled them out. */
export function fileChunks(f: FileEntry): ChunkRef[] {
  if (f.chunks) return f.chunks;
  return f.size === 0 ? [] : [[f.sha256, f.size]];
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[k];
      if (v !== undefined) out[k] = sortKeys(v);
    }
    return out;
  }
  return value;
}

/**
 * Byte-wise UTF-8 order (comparePaths) without encoding: UTF-16 code units below the surrogates
 * order as their UTF-8 bytes do, so only a difference at a unit >= U+D800 needs the bytes.
 */
function comparePathsFast(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  if (i === n) return a.length - b.length;
  const x = a.charCodeAt(i);
  const y = b.charCodeAt(i);
  return x < 0xd800 && y < 0xd800 ? x - y : comparePaths(a, b);
}

/** Whether `entries` are in strictly increasing path order (then sorting them changes nothing). */
function strictlySorted(entries: readonly { path: string }[]): boolean {
  for (let i = 1; i < entries.length; i++) if (comparePathsFast(entries[i - 1]!.path, entries[i]!.path) >= 0) return false;
  return true;
}

/**
 * Whether every object's keys already come in sorted order: then sortKeys would rebuild each
 * with the same order, and JSON.stringify of the value itself is its canonical JSON (a cheap
 * first check in decodeManifest; anything else takes the full canonicalManifestJson).
 */
function keysSorted(value: unknown): boolean {
  if (Array.isArray(value)) {
    for (const v of value) if (v && typeof v === 'object' && !keysSorted(v)) return false;
    return true;
  }
  if (!value || typeof value !== 'object') return true;
  const keys = Object.keys(value);
  for (let i = 0; i < keys.length; i++) {
    if (i > 0 && !(keys[i - 1]! < keys[i]!)) return false;
    const v = (value as Record<string, unknown>)[keys[i]!];
    if (v === undefined) return false;
    if (v && typeof v === 'object' && !keysSorted(v)) return false;
  }
  return true;
}

/** Canonical JSON: keys sorted, no whitespace, files and dirs sorted by UTF-8 bytes of path. */
export function canonicalManifestJson(m: Manifest): string {
  const norm: Manifest = {
    ...m,
    dirs: strictlySorted(m.dirs) ? m.dirs : [...m.dirs].sort((a, b) => comparePathsFast(a.path, b.path)),
    files: strictlySorted(m.files) ? m.files : [...m.files].sort((a, b) => comparePathsFast(a.path, b.path)),
  };
  return JSON.stringify(sortKeys(norm));
}

export function encodeManifest(m: Manifest): { bytes: Buffer; digest: Digest } {
  validateManifest(m);
  const bytes = Buffer.from(canonicalManifestJson(m), 'utf8');
  return { bytes, digest: sha256Digest(bytes) };
}

// The canonical bytes each decoded manifest came from: saving a copy of it (the deploy
// directory's state keeps one per applied version) writes them instead of encoding again.
const decodedFrom = new WeakMap<Manifest, { bytes: Buffer; digest: Digest }>();

/**
 * The canonical bytes and digest of a manifest that decodeManifest returned, re-encoded if it was
 * built another way. A decoded manifest is read-only: nothing in kk edits one in place (versions
 * are new objects), so its bytes are still its encoding.
 */
export function manifestBytes(m: Manifest): { bytes: Buffer; digest: Digest } {
  return decodedFrom.get(m) ?? encodeManifest(m);
}

/**
 * First byte of a manifest stored compressed (stores whose kk-store.json has
 * `"manifests":"brotli"`): the byte, then brotli of the canonical JSON. JSON never starts with
 * it. The manifest's digest, and so the version's identity, is always that of the JSON.
 */
export const MANIFEST_BROTLI = 0x01;
/** A compressed manifest never inflates past this (a reader's bound against damaged or hostile bytes). */
export const MANIFEST_MAX_BYTES = 256 * 1024 * 1024;

/** The stored form of canonical manifest bytes in a store that compresses manifests. */
export function compressManifest(json: Uint8Array): Buffer {
  const packed = brotliCompressSync(json, {
    params: {
      [zlibConstants.BROTLI_PARAM_QUALITY]: 3,
      [zlibConstants.BROTLI_PARAM_MODE]: zlibConstants.BROTLI_MODE_TEXT,
      [zlibConstants.BROTLI_PARAM_SIZE_HINT]: json.length,
    },
  });
  return Buffer.concat([Buffer.of(MANIFEST_BROTLI), packed]);
}

/** The canonical JSON bytes of a stored manifest (compressed or not). */
export function manifestJson(stored: Uint8Array, expected?: Digest): Uint8Array {
  if (stored[0] !== MANIFEST_BROTLI) return stored;
  try {
    return brotliDecompressSync(stored.subarray(1), { maxOutputLength: MANIFEST_MAX_BYTES });
  } catch (cause) {
    throw new KkError('CHUNK_CORRUPT', `manifest ${expected ?? ''} is damaged: its compressed bytes do not decode`.replace('  ', ' '), {
      cause,
      hint: 'run kk fsck on the store; re-push the version from its build to restore it',
      ...(expected ? { details: { digest: expected } } : {}),
    });
  }
}

/** Parse and validate stored manifest bytes (JSON, or compressed JSON); `expected` is checked when given. */
export function decodeManifest(stored: Uint8Array, expected?: Digest): Manifest {
  const bytes = manifestJson(stored, expected);
  const digest = sha256Digest(bytes);
  if (expected && digest !== expected) {
    throw new KkError('CHUNK_CORRUPT', `manifest ${expected} does not match its digest`, { details: { digest: expected } });
  }
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = buf.toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new KkError('MANIFEST_INVALID', 'manifest is not valid JSON', { cause });
  }
  validateManifest(parsed);
  // The digest names the canonical bytes: another spelling of the same manifest is another
  // digest, and local copies (saved canonical) would never be found under it. (Paths are unique
  // once validated, so unsorted files or dirs can never be canonical.)
  if (!strictlySorted(parsed.files) || !strictlySorted(parsed.dirs) || !(keysSorted(parsed) && JSON.stringify(parsed) === text) && canonicalManifestJson(parsed) !== text) {
    throw new KkError('MANIFEST_INVALID', 'manifest is not in canonical form (sorted keys and paths, no whitespace)', {
      hint: 'manifests are written by kk push; re-push the version instead of editing it',
      ...(expected ? { details: { digest: expected } } : {}),
    });
  }
  decodedFrom.set(parsed, { bytes: Buffer.from(buf), digest });
  return parsed;
}

const isUint = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

function bad(msg: string): never {
  throw new KkError('MANIFEST_INVALID', `invalid manifest: ${msg}`);
}

/** Full structural validation; throws UNSAFE_PATH for bad paths, MANIFEST_INVALID otherwise. */
export function validateManifest(m: unknown): asserts m is Manifest {
  if (!m || typeof m !== 'object') bad('not an object');
  const o = m as Record<string, unknown>;
  if (o.format !== MANIFEST_FORMAT) bad(`format is ${JSON.stringify(o.format)}, expected ${MANIFEST_FORMAT}`);
  assertProjectName(o.project as string);
  assertAppName(o.app as string);
  if (typeof o.version !== 'string' || o.version.length === 0) bad('version missing');
  for (const k of ['created', 'builder', 'git_commit'] as const) if (typeof o[k] !== 'string') bad(`${k} must be a string`);
  if (!o.meta || typeof o.meta !== 'object' || Array.isArray(o.meta)) bad('meta must be an object');
  for (const v of Object.values(o.meta as object)) if (typeof v !== 'string') bad('meta values must be strings');
  assertChunkingParams(o.chunking);
  if (!Array.isArray(o.files) || !Array.isArray(o.dirs)) bad('files and dirs must be arrays');
  const dirs = new Set<string>();
  const reserved = (p: string) => {
    if (p === RESERVED_TOP_LEVEL || p.startsWith(`${RESERVED_TOP_LEVEL}/`)) bad(`${p}: the top-level name ${RESERVED_TOP_LEVEL} is reserved for kk`);
  };
  for (const d of o.dirs as DirEntry[]) {
    if (!plainSafePath(d?.path)) assertSafePath(d?.path);
    reserved(d.path);
    if (!isUint(d.mode) || d.mode > 0o1777) bad(`dir ${d.path}: bad mode`);
    if (dirs.has(d.path)) bad(`dir ${d.path} listed twice`);
    dirs.add(d.path);
  }
  const files = new Set<string>();
  const max = (o.chunking as ChunkingParams).max;
  for (const f of o.files as FileEntry[]) {
    if (!plainSafePath(f?.path)) assertSafePath(f?.path);
    reserved(f.path);
    if (files.has(f.path) || dirs.has(f.path)) bad(`path ${f.path} listed twice`);
    files.add(f.path);
    if (!isUint(f.size)) bad(`${f.path}: bad size`);
    if (!isUint(f.mode) || f.mode > 0o1777) bad(`${f.path}: bad mode (setuid/setgid are not allowed)`);
    if (!isUint(f.mtime)) bad(`${f.path}: bad mtime`);
    if (!isDigest(f.sha256)) bad(`${f.path}: bad sha256`);
    if (f.size === 0 && f.sha256 !== EMPTY_DIGEST) bad(`${f.path}: an empty file must have the digest of zero bytes`);
    if (f.chunks !== undefined) {
      if (!Array.isArray(f.chunks) || f.chunks.length < 2) bad(`${f.path}: chunks must list at least two chunks or be omitted`);
      let sum = 0;
      for (const c of f.chunks) {
        if (!Array.isArray(c) || c.length !== 2 || !isDigest(c[0]) || !isUint(c[1]) || c[1] === 0 || c[1] > max) {
          bad(`${f.path}: bad chunk entry`);
        }
        sum += c[1];
      }
      if (sum !== f.size) bad(`${f.path}: chunk sizes add up to ${sum}, not ${f.size}`);
    } else if (f.size > max) {
      bad(`${f.path}: a file larger than the maximum chunk must list its chunks`);
    }
  }
  if (o.deltas !== undefined) {
    if (!o.deltas || typeof o.deltas !== 'object' || Array.isArray(o.deltas)) bad('deltas must be an object');
    for (const [k, v] of Object.entries(o.deltas as object)) if (!isDigest(k) || !isDigest(v)) bad('deltas must map digests to digests');
  }
  if (o.ignore !== undefined) {
    if (!Array.isArray(o.ignore) || o.ignore.length > 10_000) bad('ignore must be a list of at most 10000 patterns');
    for (const r of o.ignore) if (typeof r !== 'string' || r.length === 0 || r.length > 4096 || r.includes('\n')) bad('ignore patterns must be non-empty one-line strings');
  }
  // A path cannot be both a file and the parent of another entry.
  // (Parents by prefix, outermost first, as parentsOf lists them.)
  for (const set of [files, dirs]) {
    for (const p of set) {
      for (let i = p.indexOf('/'); i > 0; i = p.indexOf('/', i + 1)) {
        if (files.has(p.slice(0, i))) bad(`${p.slice(0, i)} is a file and a directory`);
      }
    }
  }
}

// An ASCII path of 1..255-byte segments, none empty, "." or "..", no NUL or backslash, at most
// 4095 bytes: what assertSafePath accepts, decided by one regular expression. Other paths go
// through assertSafePath itself (which also words the refusal).
const SEGMENT = String.raw`(?!\.\.?(?:/|$))[\x01-\x2e\x30-\x5b\x5d-\x7f]{1,255}`;
const PLAIN_SAFE_PATH = new RegExp(`^${SEGMENT}(?:/${SEGMENT})*$`);
function plainSafePath(p: unknown): boolean {
  return typeof p === 'string' && p.length <= 4095 && PLAIN_SAFE_PATH.test(p);
}

export function manifestKey(d: Digest): string {
  const hex = digestHex(d);
  return `manifests/${hex.slice(0, 2)}/${hex}`;
}

// The yaml package is loaded on first use: it costs a pull (which never renders YAML) ~0.1 s
// of start-up on its own.
let yamlStringify: typeof import('yaml').stringify | undefined;

/** The seed's meta.yaml shape (seed 001 section 4). */
export function renderMetaYaml(m: Manifest): string {
  yamlStringify ??= (createRequire(import.meta.url)('yaml') as typeof import('yaml')).stringify;
  return yamlStringify({
    project: m.project,
    app: m.app,
    version: m.version,
    git_commit: m.git_commit,
    build_time: m.created,
    builder: m.builder,
    files: m.files.map((f) => ({ path: f.path, sha256: digestHex(f.sha256), size: f.size })),
  });
}

/** Lines `sha256sum -c` accepts, run inside the deploy directory. */
export function renderSha256sum(m: Manifest): string {
  return m.files
    .map((f) => {
      const escaped = /[\n\\]/.test(f.path);
      const name = f.path.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
      return `${escaped ? '\\' : ''}${digestHex(f.sha256)}  ${name}\n`;
    })
    .join('');
}

export interface ManifestSummary {
  files: number;
  dirs: number;
  bytes: number;
  chunks: number;
}

export function summarizeManifest(m: Manifest): ManifestSummary {
  let bytes = 0;
  let chunks = 0;
  for (const f of m.files) {
    bytes += f.size;
    chunks += fileChunks(f).length;
  }
  return { files: m.files.length, dirs: m.dirs.length, bytes, chunks };
}

/** Whether two manifests describe the same tree (ignoring who built it and when). */
export function sameContent(a: Manifest, b: Manifest): boolean {
  const tree = (m: Manifest) => canonicalManifestJson({ ...m, created: '', builder: '', version: '', meta: {}, git_commit: '', deltas: undefined, ignore: undefined });
  return tree(a) === tree(b);
}
