// Issue 2, acceptance 9: push (and pull) a 1 GiB file through the file store and print the
// process's peak RSS. Hashing, chunking and compression run in the worker pool; the main
// thread only streams chunk objects, so memory stays flat whatever the file size.
//   node bench/push-rss.mjs [--gib N] [--keep]
import { mkdirSync, rmSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Store, createHasher, push, pull } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { writeRandomFile } from '../fixtures/generate.mjs';

const args = process.argv.slice(2);
const gib = Number(args[args.indexOf('--gib') + 1]) || 1;
const data = join(import.meta.dirname, '.data', 'rss');
const src = join(data, 'src');
const file = join(src, 'big.bin');
const size = gib * 1024 ** 3;
if (!existsSync(file) || statSync(file).size !== size) {
  mkdirSync(src, { recursive: true });
  console.error(`generating ${gib} GiB at ${file}`);
  writeRandomFile(file, size, 'rss-bench');
}
rmSync(join(data, 'store'), { recursive: true, force: true });
rmSync(join(data, 'state'), { recursive: true, force: true });
rmSync(join(data, 'deploy'), { recursive: true, force: true });

const hasher = createHasher();
const store = await Store.open(createFileDriver({ root: join(data, 'store') }), { create: true });
const t0 = performance.now();
const pushed = await push({ store, hasher, project: 'bench', app: 'rss', version: '1', dir: src, stateDir: join(data, 'state'), statCache: false });
const pushS = (performance.now() - t0) / 1000;
const rssAfterPush = process.resourceUsage().maxRSS / 1024;
const t1 = performance.now();
const pulled = await pull({ store, hasher, project: 'bench', app: 'rss', version: '1', target: join(data, 'deploy'), stateDir: join(data, 'state') });
const pullS = (performance.now() - t1) / 1000;
await hasher.close();
const peak = process.resourceUsage().maxRSS / 1024;
const mb = size / 1e6;
console.log(JSON.stringify({
  file_gib: gib,
  push_s: +pushS.toFixed(2),
  push_mb_s: +(mb / pushS).toFixed(0),
  push_peak_rss_mb: +rssAfterPush.toFixed(0),
  pull_s: +pullS.toFixed(2),
  pull_mb_s: +(mb / pullS).toFixed(0),
  peak_rss_mb: +peak.toFixed(0),
  chunks: pushed.chunks,
  bytes_stored: pushed.bytesUploadedStored,
  bytes_fetched: pulled.bytesFetched,
}));
if (!args.includes('--keep')) rmSync(join(data, 'deploy'), { recursive: true, force: true });
rmSync(join(data, 'store'), { recursive: true, force: true });
if (peak > 300) {
  console.error(`peak RSS ${peak.toFixed(0)} MB is over the 300 MB budget`);
  process.exitCode = 1;
}
