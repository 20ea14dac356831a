// Chunk compression on real data (issue 7): brotli qualities 1-4 (kk's settings: window 22, size
// hint) and gzip levels 1 and 6, on kk's own chunks of a real JavaScript tree, a real native
// binary and incompressible data. Single-threaded MB/s (of raw bytes) and ratio, plus the cost of
// kk's probe (brotli quality 1 on 32 KiB from the middle of a chunk) per raw byte.
//   node bench/compression.mjs [--max-mib N] [--json] [--out PATH (no extension)]
import { readFileSync, readdirSync, statSync, realpathSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { brotliCompressSync, brotliDecompressSync, constants as z, gunzipSync, gzipSync } from 'node:zlib';
import { chunkingFor, createHasher } from '@kk/core';
import { keystream } from '../fixtures/generate.mjs';

const HERE = import.meta.dirname;
const args = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i < 0 ? dflt : args[i + 1];
};
const maxBytes = Number(flag('max-mib', 48)) * 2 ** 20;
const outBase = resolve(HERE, '..', flag('out', 'bench/results/compression'));
const asJson = args.includes('--json');

const filesUnder = (dir) =>
  readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? filesUnder(join(dir, d.name)) : d.isFile() ? [join(dir, d.name)] : []));

/** The largest native binary at hand: a package binary fetched by run.mjs, else Node itself. */
function nativeBinary() {
  const real = join(HERE, '.data', 'real');
  const candidates = [];
  try {
    for (const f of filesUnder(real)) if (f.endsWith('.node')) candidates.push(f);
  } catch {
    // run.mjs has not fetched the real packages yet
  }
  candidates.push(realpathSync(process.execPath));
  return candidates.map((f) => ({ f, size: statSync(f).size })).sort((a, b) => b.size - a.size)[0].f;
}

const tsLib = join(dirname(realpathSync(join(HERE, '..', 'node_modules', 'typescript', 'package.json'))), 'lib');
const binary = nativeBinary();
const datasets = [
  { id: 'js', label: `JavaScript tree (${tsLib.replace(resolve(HERE, '..') + '/', '')})`, files: filesUnder(tsLib) },
  { id: 'native', label: `native binary (${binary.replace(resolve(HERE, '..') + '/', '')})`, files: [binary] },
  { id: 'random', label: 'incompressible (AES keystream)', synthetic: () => keystream('compression-bench')(Math.min(maxBytes, 32 * 2 ** 20)) },
];

const brotli = (level) => (d) =>
  brotliCompressSync(d, { params: { [z.BROTLI_PARAM_QUALITY]: level, [z.BROTLI_PARAM_SIZE_HINT]: d.length, [z.BROTLI_PARAM_LGWIN]: 22 } });
const codecs = [
  ...[1, 2, 3, 4].map((q) => ({ name: `brotli ${q}`, compress: brotli(q), decompress: (d) => brotliDecompressSync(d) })),
  ...[1, 6].map((l) => ({ name: `gzip ${l}`, compress: (d) => gzipSync(d, { level: l }), decompress: (d) => gunzipSync(d) })),
];
const PROBE = 32 * 1024;
const probe = (c) => {
  const n = Math.min(PROBE, c.length);
  const off = Math.floor((c.length - n) / 2);
  return brotli(1)(c.subarray(off, off + n));
};

/** kk's chunks of the dataset, sampled evenly across it down to `maxBytes`. */
async function chunksOf(ds) {
  if (ds.synthetic) {
    const data = ds.synthetic();
    const out = [];
    for (let o = 0; o < data.length; o += 512 * 1024) out.push(data.subarray(o, o + 512 * 1024));
    return out;
  }
  const hasher = createHasher({ threads: 2 });
  try {
    const results = await hasher.hashFiles(ds.files, chunkingFor());
    const all = [];
    results.forEach((r, i) => {
      if (!('sha256' in r)) throw new Error(`cannot read ${ds.files[i]}`);
      let off = 0;
      for (const [, size] of r.chunks) {
        all.push({ file: ds.files[i], off, size });
        off += size;
      }
    });
    const total = all.reduce((s, c) => s + c.size, 0);
    const step = Math.max(1, total / maxBytes);
    const picked = all.filter((_, i) => Math.floor(i / step) !== Math.floor((i - 1) / step) || step === 1);
    const cache = new Map();
    return picked.map((c) => {
      if (!cache.has(c.file)) cache.set(c.file, readFileSync(c.file));
      return cache.get(c.file).subarray(c.off, c.off + c.size);
    });
  } finally {
    await hasher.close();
  }
}

function timeIt(fn, reps) {
  const times = [];
  let out;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    out = fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(times.length / 2)], out };
}

const results = [];
for (const ds of datasets) {
  const chunks = await chunksOf(ds);
  const raw = chunks.reduce((s, c) => s + c.length, 0);
  const reps = raw > 32 * 2 ** 20 ? 1 : 3;
  const mbps = (ms) => +(raw / 1e6 / (ms / 1000)).toFixed(1);
  const row = { dataset: ds.id, label: ds.label, chunks: chunks.length, raw_bytes: raw, codecs: {} };
  for (const c of codecs) {
    const enc = timeIt(() => chunks.map((x) => c.compress(x)), reps);
    const stored = enc.out.reduce((s, x) => s + x.length, 0);
    const dec = timeIt(() => enc.out.map((x) => c.decompress(x)), reps);
    row.codecs[c.name] = { ratio: +(raw / stored).toFixed(3), compress_mb_s: mbps(enc.ms), decompress_mb_s: mbps(dec.ms), stored_bytes: stored };
    if (!asJson) console.error(`${ds.id} ${c.name}: ratio ${row.codecs[c.name].ratio}, ${row.codecs[c.name].compress_mb_s} MB/s`);
  }
  const pr = timeIt(() => chunks.map(probe), reps);
  row.probe_mb_s = mbps(pr.ms);
  results.push(row);
}

// What a push would achieve through a link of a given speed with both cores compressing:
// throughput = min(cores x compress speed, link speed x ratio), in raw MB/s.
const cores = cpus().length;
const links = [
  ['100 Mbit/s', 12.5],
  ['1 Gbit/s', 125],
];
const L = [];
L.push(`Single-threaded, on kk's own chunks (FastCDC, avg 512 KiB; sampled evenly to at most ${maxBytes / 2 ** 20} MiB per data set). ` +
  `Brotli with kk's parameters (window 22, size hint); gzip via node:zlib. MB/s are of raw bytes. "push through a link" = min(${cores} cores × compress MB/s, link MB/s × ratio): ` +
  'the raw MB/s a push would reach when compression and the network overlap.', '');
for (const r of results) {
  L.push(`**${r.label}**: ${r.chunks} chunks, ${(r.raw_bytes / 2 ** 20).toFixed(1)} MiB. kk's probe (brotli 1 on 32 KiB of each chunk): ${r.probe_mb_s} MB/s of raw chunk bytes.`, '');
  L.push(`| codec | ratio | compress MB/s | decompress MB/s | ${links.map(([n]) => `push through ${n}, MB/s`).join(' | ')} |`);
  L.push(`| --- | ---: | ---: | ---: | ${links.map(() => '---:').join(' | ')} |`);
  for (const [name, c] of Object.entries(r.codecs)) {
    L.push(`| ${name} | ${c.ratio.toFixed(2)} | ${c.compress_mb_s} | ${c.decompress_mb_s} | ${links.map(([, mb]) => Math.min(cores * c.compress_mb_s, mb * c.ratio).toFixed(0)).join(' | ')} |`);
  }
  L.push('');
}
const markdown = L.join('\n');
const report = { machine: { cpu: cpus()[0]?.model, cores, node: process.version, date: new Date().toISOString() }, max_bytes: maxBytes, results, markdown };
if (!args.includes('--no-write')) {
  mkdirSync(dirname(outBase), { recursive: true });
  writeFileSync(`${outBase}.json`, JSON.stringify({ ...report, markdown: undefined }, null, 2) + '\n');
  writeFileSync(`${outBase}.md`, `# Chunk compression levels\n\n${report.machine.date.slice(0, 10)}, ${cores} × ${report.machine.cpu}, Node ${process.version}.\n\n${markdown}\n`);
}
if (asJson) console.log(JSON.stringify(report));
else console.log(markdown);
