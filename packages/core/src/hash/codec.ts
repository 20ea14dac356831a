// Chunk object encoding (DESIGN 3): one header byte, then the payload. The digest always names
// the uncompressed bytes, so a reader decodes before it verifies.
import { brotliCompressSync, brotliDecompressSync, constants as z } from 'node:zlib';

export const ENCODING_RAW = 0;
export const ENCODING_BROTLI = 1;

export interface CompressionPolicy {
  /** `brotli` compresses chunks that a probe says will shrink; `none` stores everything raw. */
  algorithm: 'brotli' | 'none';
  /** Brotli quality 0-11; low qualities are fast. */
  level: number;
  /** Store compressed only if the result is at most this fraction of the raw size. */
  minSaving: number;
}

export const DEFAULT_COMPRESSION: CompressionPolicy = { algorithm: 'brotli', level: 3, minSaving: 0.1 };

const PROBE_BYTES = 32 * 1024;
/** Bits per byte above which data is taken as already compressed or random. */
const INCOMPRESSIBLE_ENTROPY = 7.9;

/** Order-0 entropy of a sample, bits per byte: a few microseconds, no allocation to speak of. */
function entropy(sample: Uint8Array): number {
  const counts = new Uint32Array(256);
  for (let i = 0; i < sample.length; i++) counts[sample[i]!]!++;
  let h = 0;
  for (let i = 0; i < 256; i++) {
    const c = counts[i]!;
    if (c) {
      const p = c / sample.length;
      h -= p * Math.log2(p);
    }
  }
  return h;
}

function brotli(data: Uint8Array, level: number): Buffer {
  return brotliCompressSync(data, {
    params: {
      [z.BROTLI_PARAM_QUALITY]: level,
      [z.BROTLI_PARAM_SIZE_HINT]: data.length,
      [z.BROTLI_PARAM_LGWIN]: 22,
    },
  });
}

function withHeader(encoding: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(payload.length + 1);
  out[0] = encoding;
  out.set(payload, 1);
  return out;
}

/** Encode raw chunk bytes as a stored object, compressing only when it pays. */
export function encodeChunkObject(raw: Uint8Array, policy: CompressionPolicy): Buffer {
  if (policy.algorithm === 'brotli' && raw.length >= 512) {
    const limit = 1 - policy.minSaving;
    // A cheap probe first: incompressible data pays for one small quality-1 pass, nothing more.
    const probeLen = Math.min(PROBE_BYTES, raw.length);
    const off = Math.floor((raw.length - probeLen) / 2);
    const sample = raw.subarray(off, off + probeLen);
    // Random and already-compressed data stops at the histogram; the rest gets a real probe.
    if (entropy(sample) < INCOMPRESSIBLE_ENTROPY && brotli(sample, 1).length <= probeLen * limit) {
      const packed = brotli(raw, policy.level);
      if (packed.length <= raw.length * limit) return withHeader(ENCODING_BROTLI, packed);
    }
  }
  return withHeader(ENCODING_RAW, raw);
}

/** Decode a stored object to its raw bytes; throws on an unknown header or a bad payload. */
export function decodeChunkObject(obj: Uint8Array, maxSize: number): Uint8Array {
  if (obj.length === 0) throw new Error('empty chunk object');
  const payload = obj.subarray(1);
  switch (obj[0]) {
    case ENCODING_RAW:
      return payload;
    case ENCODING_BROTLI:
      return brotliDecompressSync(payload, { maxOutputLength: Math.max(maxSize, 1) });
    default:
      throw new Error(`unknown chunk encoding ${obj[0]}`);
  }
}
