// Preload for memory questions: `node --import ./bench/lib/memwatch.mjs bench/kk-run.mjs ...`
// samples process.memoryUsage() every 10 ms and prints the peaks (MB) to stderr on exit. Heap
// figures are the main thread's only; rss covers the pool workers too.
const peak = { rss: 0, heapUsed: 0, heapTotal: 0, external: 0, arrayBuffers: 0 };
const atPeakRss = {};
const sample = () => {
  const m = process.memoryUsage();
  for (const k of Object.keys(peak)) peak[k] = Math.max(peak[k], m[k]);
  if (m.rss >= peak.rss) Object.assign(atPeakRss, m);
};
setInterval(sample, 10).unref();
process.on('exit', () => {
  sample();
  const mb = (o) => JSON.stringify(Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Math.round(v / 2 ** 20)])));
  process.stderr.write(`memwatch: peaks ${mb(peak)}; at peak rss ${mb(atPeakRss)}\n`);
});
