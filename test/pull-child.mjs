// Child process for tests that need a pull in its own process (another user, SIGKILL, a slow
// commit): one pull, its outcome as one JSON line on stdout.
// argv: storeDir stateDir target project app version [count | die:N]
// `count` reports how many renames/unlinks/mkdirs/rmdirs the main thread made; `die:N` SIGKILLs
// the process itself just before the N-th one, so a kill lands at an exact step of a commit or
// of a replay, not wherever a timer happens to fire.
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { Store, createHasher, pull } from '@kk/core';
import { createFileDriver } from '@kk/drivers';

const [storeDir, stateDir, target, project, app, version, mode] = process.argv.slice(2);
let steps = 0;
if (mode) {
  const dieAt = mode.startsWith('die:') ? Number(mode.slice(4)) : 0;
  for (const name of ['renameSync', 'unlinkSync', 'mkdirSync', 'rmdirSync']) {
    const orig = fs[name];
    fs[name] = (...args) => {
      if (++steps === dieAt) process.kill(process.pid, 'SIGKILL');
      return orig(...args);
    };
  }
  syncBuiltinESMExports();
}
const hasher = createHasher({ threads: 1 });
const store = await Store.open(createFileDriver({ root: storeDir }));
try {
  const r = await pull({ store, hasher, project, app, version, target, stateDir });
  process.stdout.write(`${JSON.stringify({ ok: true, version: r.version, recovered: r.recovered, steps })}\n`);
} catch (err) {
  process.stdout.write(`${JSON.stringify({ ok: false, code: err?.code ?? null, name: err?.name, message: String(err?.message) })}\n`);
} finally {
  await hasher.close();
}
