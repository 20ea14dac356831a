// SHA-256 and chunker throughput on this machine, side by side: node:crypto, hash-wasm,
// `openssl dgst -sha256`, and kk's FastCDC chunker + hashing in one worker. MB/s, median of 3.
//   node bench/hash.mjs [--mib N]
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createSHA256 } from 'hash-wasm';
import { chunkingFor, createHasher } from '@kk/core';
import { keystream } from '../fixtures/generate.mjs';

const args = process.argv.slice(2);
const mib = Number(args[args.indexOf('--mib') + 1]) || 256;
const data = keystream('hash-bench')(mib * 1024 * 1024);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mbps = (seconds) => +((data.length / 1e6) / seconds).toFixed(0);

const results = {};
// Seconds per method (median, min, max of 3), for bench/run.mjs's hash case.
const seconds = {};
let timing;
async function time(fn) {
  const runs = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await fn();
    runs.push((performance.now() - t0) / 1000);
  }
  timing = { median: median(runs), min: Math.min(...runs), max: Math.max(...runs) };
  return median(runs);
}
const record = (name, value) => {
  results[name] = value;
  if (typeof value === 'number') seconds[name] = timing;
};

const block = 1024 * 1024;
record('node:crypto', mbps(await time(() => {
  const h = createHash('sha256');
  for (let o = 0; o < data.length; o += block) h.update(data.subarray(o, o + block));
  h.digest();
})));
const wasm = await createSHA256();
record('hash-wasm', mbps(await time(() => {
  wasm.init();
  for (let o = 0; o < data.length; o += block) wasm.update(data.subarray(o, o + block));
  wasm.digest();
})));
const dir = join(import.meta.dirname, '.data', 'hash');
mkdirSync(dir, { recursive: true });
const file = join(dir, 'data.bin');
writeFileSync(file, data);
try {
  record('openssl dgst', mbps(await time(() => execFileSync('openssl', ['dgst', '-sha256', file]))));
} catch {
  results['openssl dgst'] = 'missing';
}
const hasher = createHasher({ threads: 1 });
await hasher.hashFiles([file], chunkingFor()); // warm the worker (file cache, JIT)
record('kk chunk+hash (1 worker)', mbps(await time(() => hasher.hashFiles([file], chunkingFor()))));
await hasher.close();
rmSync(dir, { recursive: true, force: true });
console.log(JSON.stringify({ mib, mb_per_s: results, seconds }, null, 1));
