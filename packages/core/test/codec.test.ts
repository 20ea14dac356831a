// Chunk objects: raw and brotli encodings, both always readable, corrupt payloads detected.
import { describe, expect, it, afterAll } from 'vitest';
import { createHasher, sha256Digest, ENCODING_BROTLI, ENCODING_RAW, DEFAULT_COMPRESSION } from '@kk/core';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { keystream, textBytes } from '../../../fixtures/generate.mjs';

const hasher = createHasher({ threads: 1 });
afterAll(() => hasher.close());

async function encode(data: Buffer, policy = DEFAULT_COMPRESSION) {
  const dir = await mkdtemp(join(tmpdir(), 'kk-codec-'));
  await writeFile(join(dir, 'f'), data);
  const obj = await hasher.encodeChunk(join(dir, 'f'), 0, data.length, sha256Digest(data), policy);
  await rm(dir, { recursive: true });
  return obj;
}

describe('chunk object encoding', () => {
  it('compresses compressible data with brotli and round-trips it', async () => {
    const text = textBytes(400_000, 'codec');
    const obj = await encode(text);
    expect(obj[0]).toBe(ENCODING_BROTLI);
    expect(obj.length).toBeLessThan(text.length * 0.5);
    const back = await hasher.decodeChunk(obj, sha256Digest(text), text.length);
    expect(back.ok && Buffer.from(back.raw).equals(text)).toBe(true);
  });

  it('stores incompressible data raw, and everything raw when compression is off', async () => {
    const rnd = keystream('codec-rnd')(300_000);
    const obj = await encode(rnd);
    expect(obj[0]).toBe(ENCODING_RAW);
    expect(obj.length).toBe(rnd.length + 1);
    const text = textBytes(100_000, 'codec-off');
    const off = await encode(text, { algorithm: 'none', level: 0, minSaving: 0.1 });
    expect(off[0]).toBe(ENCODING_RAW);
    const back = await hasher.decodeChunk(off, sha256Digest(text), text.length);
    expect(back.ok).toBe(true);
  });

  it('detects a corrupt compressed payload, a flipped raw byte and an unknown header', async () => {
    const text = textBytes(200_000, 'codec-bad');
    const d = sha256Digest(text);
    const obj = Buffer.from(await encode(text));
    const flipped = Buffer.from(obj);
    flipped[Math.floor(obj.length / 2)]! ^= 0x55;
    expect((await hasher.decodeChunk(flipped, d, text.length)).ok).toBe(false);
    const truncated = obj.subarray(0, obj.length - 10);
    expect((await hasher.decodeChunk(truncated, d, text.length)).ok).toBe(false);
    const raw = Buffer.concat([Buffer.from([ENCODING_RAW]), text]);
    raw[100]! ^= 1;
    expect((await hasher.decodeChunk(raw, d, text.length)).ok).toBe(false);
    const unknown = Buffer.from(obj);
    unknown[0] = 7;
    const r = await hasher.decodeChunk(unknown, d, text.length);
    expect(r.ok === false && r.reason).toMatch(/unknown chunk encoding/);
  });
});
