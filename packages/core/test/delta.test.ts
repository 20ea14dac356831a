// Byte-level deltas: exact round trips, small results for small edits, refusal of bad input.
import { describe, expect, it } from 'vitest';
// The delta codec is internal to the pool; tests reach it through the build output.
import { applyDelta, encodeDelta } from '../dist/hash/delta.js';
import { keystream, textBytes } from '../../../fixtures/generate.mjs';

function edit(base: Buffer, seed: string): Buffer {
  const r = keystream(seed);
  let out = Buffer.from(base);
  for (let k = 0; k < 6; k++) {
    const at = r(4).readUInt32LE(0) % out.length;
    const kind = k % 3;
    if (kind === 0) out = Buffer.concat([out.subarray(0, at), r(1 + (at % 40)), out.subarray(at)]);
    else if (kind === 1) out = Buffer.concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + 30))]);
    else r(8).copy(out, Math.min(at, out.length - 8));
  }
  return out;
}

describe('chunk deltas', () => {
  it.each([
    ['random', keystream('delta-rnd')(600_000)],
    ['text', textBytes(500_000, 'delta-text')],
  ])('round-trips edited %s data and stays small', (_kind, base) => {
    const target = edit(base, `edit-${_kind}`);
    const d = encodeDelta(base, target);
    expect(Buffer.from(applyDelta(base, d, target.length)).equals(target)).toBe(true);
    expect(d.length).toBeLessThan(2000);
  });

  it('round-trips unrelated, empty and tiny inputs', () => {
    const a = keystream('a')(50_000);
    const b = keystream('b')(40_000);
    for (const [x, y] of [[a, b], [a, Buffer.alloc(0)], [Buffer.alloc(0), b], [Buffer.from('abc'), Buffer.from('abd')]] as const) {
      expect(Buffer.from(applyDelta(x, encodeDelta(x, y), y.length)).equals(y)).toBe(true);
    }
  });

  it('refuses malformed deltas and outputs past the limit', () => {
    const base = Buffer.from('0123456789');
    expect(() => applyDelta(base, Buffer.from([1, 5, 20]), 100)).toThrow(/past the end/);
    expect(() => applyDelta(base, Buffer.from([7]), 100)).toThrow(/unknown delta op/);
    expect(() => applyDelta(base, Buffer.from([0, 50, 1]), 100)).toThrow(/truncated/);
    expect(() => applyDelta(base, Buffer.from([1, 0, 10]), 5)).toThrow(/larger than/);
  });
});
