// Byte-level deltas between two chunks (a new chunk against the chunk at the same place in the
// previous version), for transfers far below a whole chunk when builds change a few bytes in
// large files. Format: varint-coded ops, `0 len bytes` (insert) or `1 offset len` (copy from
// the base). The caller compresses the result. Pure; runs in the pool.

const WINDOW = 16; // shortest match worth a copy op
const STEP = 8; // base positions indexed (every 8th; matches of WINDOW + STEP - 1 are always found)
const MUL = 0x01000193;

function power(n: number): number {
  let p = 1;
  for (let i = 0; i < n; i++) p = Math.imul(p, MUL);
  return p;
}
const OUT = power(WINDOW);

function hashAt(b: Uint8Array, i: number): number {
  let h = 0;
  for (let k = 0; k < WINDOW; k++) h = (Math.imul(h, MUL) + b[i + k]!) | 0;
  return h;
}

class Writer {
  buf = new Uint8Array(1024);
  len = 0;
  private grow(n: number) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  byte(v: number) {
    this.grow(1);
    this.buf[this.len++] = v;
  }
  varint(v: number) {
    while (v >= 0x80) {
      this.byte((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.byte(v);
  }
  bytes(b: Uint8Array) {
    this.grow(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
}

/** Ops that turn `base` into `target`. */
export function encodeDelta(base: Uint8Array, target: Uint8Array): Uint8Array {
  const out = new Writer();
  const bits = Math.max(10, Math.min(22, Math.ceil(Math.log2(base.length / STEP + 1)) + 1));
  const mask = (1 << bits) - 1;
  const table = new Int32Array(1 << bits); // base position + 1, 0 = empty
  for (let p = 0; p + WINDOW <= base.length; p += STEP) {
    const slot = hashAt(base, p) & mask;
    if (table[slot] === 0) table[slot] = p + 1;
  }
  let lit = 0; // start of pending literal bytes in target
  const flush = (end: number) => {
    if (end > lit) {
      out.byte(0);
      out.varint(end - lit);
      out.bytes(target.subarray(lit, end));
    }
  };
  let i = 0;
  let h = target.length >= WINDOW ? hashAt(target, 0) : 0;
  while (i + WINDOW <= target.length) {
    const cand = table[h & mask]! - 1;
    if (cand >= 0 && equalRun(base, cand, target, i, WINDOW)) {
      let p = cand;
      let start = i;
      while (start > lit && p > 0 && base[p - 1] === target[start - 1]) {
        start--;
        p--;
      }
      let len = i - start + WINDOW;
      while (start + len < target.length && p + len < base.length && base[p + len] === target[start + len]) len++;
      flush(start);
      out.byte(1);
      out.varint(p);
      out.varint(len);
      i = start + len;
      lit = i;
      if (i + WINDOW <= target.length) h = hashAt(target, i);
      continue;
    }
    if (i + WINDOW < target.length) h = (Math.imul(h, MUL) + target[i + WINDOW]! - Math.imul(OUT, target[i]!)) | 0;
    i++;
  }
  flush(target.length);
  return out.buf.subarray(0, out.len);
}

function equalRun(a: Uint8Array, ai: number, b: Uint8Array, bi: number, n: number): boolean {
  if (ai + n > a.length || bi + n > b.length) return false;
  for (let k = 0; k < n; k++) if (a[ai + k] !== b[bi + k]) return false;
  return true;
}

/** Apply ops to `base`; throws on a malformed delta or one that overruns `maxSize`. */
export function applyDelta(base: Uint8Array, delta: Uint8Array, maxSize: number): Uint8Array {
  const out = new Writer();
  let i = 0;
  const varint = () => {
    let v = 0;
    let mul = 1;
    for (;;) {
      if (i >= delta.length) throw new Error('truncated delta');
      const b = delta[i++]!;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 0x80;
      if (mul > 2 ** 49) throw new Error('malformed delta');
    }
  };
  while (i < delta.length) {
    const op = delta[i++];
    if (op === 0) {
      const n = varint();
      if (i + n > delta.length) throw new Error('truncated delta');
      out.bytes(delta.subarray(i, i + n));
      i += n;
    } else if (op === 1) {
      const p = varint();
      const n = varint();
      if (p + n > base.length) throw new Error('delta copies past the end of its base');
      out.bytes(base.subarray(p, p + n));
    } else {
      throw new Error(`unknown delta op ${op}`);
    }
    if (out.len > maxSize) throw new Error('delta output larger than the chunk');
  }
  return out.buf.subarray(0, out.len);
}
