// FastCDC (Xia et al. 2016) with a 32-bit gear hash and normalized chunking level 2.
// Pure and deterministic: boundaries depend only on the bytes and the parameters.
import { createHash } from 'node:crypto';

export interface CdcParams {
  min: number;
  avg: number;
  max: number;
  seed: string;
}

const gearCache = new Map<string, Int32Array>();

/**
 * 256 pseudo-random 32-bit values: the first 4 bytes of sha256(`${seed}:${i}`). Held as int32
 * (same bits) so the hot loop stays in V8's int32 arithmetic instead of doubles.
 */
export function gearTable(seed: string): Int32Array {
  let g = gearCache.get(seed);
  if (!g) {
    g = new Int32Array(256);
    for (let i = 0; i < 256; i++) g[i] = createHash('sha256').update(`${seed}:${i}`).digest().readInt32BE(0);
    gearCache.set(seed, g);
  }
  return g;
}

/** A mask of the `bits` most significant bits: those depend on the last 32 bytes seen. */
function topMask(bits: number): number {
  return (0xffffffff << (32 - bits)) | 0;
}

export class Cdc {
  private readonly gear: Int32Array;
  private readonly maskS: number;
  private readonly maskL: number;

  constructor(readonly p: CdcParams) {
    this.gear = gearTable(p.seed);
    const bits = Math.round(Math.log2(p.avg));
    this.maskS = topMask(bits + 2);
    this.maskL = topMask(bits - 2);
  }

  /**
   * Length of the chunk starting at `buf[start]`, given `len` available bytes. The caller passes
   * at least `max` bytes unless the input ends sooner, so the result never depends on how the
   * input was read.
   */
  cut(buf: Uint8Array, start: number, len: number): number {
    const { min, avg, max } = this.p;
    if (len <= min) return len;
    const limit = Math.min(len, max);
    const normal = Math.min(limit, avg);
    const gear = this.gear;
    const maskS = this.maskS;
    const maskL = this.maskL;
    let h = 0;
    let i = start + min;
    const endS = start + normal;
    const endL = start + limit;
    for (; i < endS; i++) {
      h = ((h << 1) + gear[buf[i]!]!) | 0;
      if ((h & maskS) === 0) return i + 1 - start;
    }
    for (; i < endL; i++) {
      h = ((h << 1) + gear[buf[i]!]!) | 0;
      if ((h & maskL) === 0) return i + 1 - start;
    }
    return limit;
  }
}
