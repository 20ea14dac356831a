// A worker thread of fleet-concurrency.test.ts: its own connection to the database, claiming for
// every node in turn and reporting success after a short random pause, until nothing is left.
import { parentPort, workerData } from 'node:worker_threads';
import { Control } from '../dist/index.js';

const { url, nodes, deadlineMs } = workerData;
const c = await Control.open(url);
let claimed = 0;
let conflicts = 0;
try {
  const end = Date.now() + deadlineMs;
  for (let round = 0; round < 10_000 && Date.now() < end; round++) {
    let got = 0;
    for (const node of nodes) {
      const claim = await c.fleet.claim(node);
      if (!claim) continue;
      got++;
      claimed++;
      await new Promise((r) => setTimeout(r, Math.random() * 4));
      try {
        await c.fleet.report(node, claim.task.id, claim.attempt_id, { outcome: { ok: true, result: { worker: workerData.id } } });
      } catch (err) {
        if (err.code !== 'LOCKED') throw err;
        conflicts++;
      }
    }
    if (got === 0) {
      const left = await c.fleet.tasks({ state: 'PENDING' }, { limit: 1 });
      const running = await c.fleet.tasks({ state: 'RUNNING' }, { limit: 1 });
      if (left.items.length === 0 && running.items.length === 0) break;
      await new Promise((r) => setTimeout(r, 2));
    }
  }
  parentPort.postMessage({ claimed, conflicts });
} catch (err) {
  parentPort.postMessage({ error: String(err?.stack ?? err) });
} finally {
  await c.close();
}
