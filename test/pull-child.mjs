// Child process for tests that need a pull in its own process (another user, SIGKILL, a slow
// commit): one pull, its outcome as one JSON line on stdout.
// argv: storeDir stateDir target project app version [slowMs]
// With slowMs, every rename/unlink/mkdir/rmdir of the main thread waits that long first, so a
// parent's SIGKILL lands inside a commit or a replay as often as before it.
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { Store, createHasher, pull } from '@kk/core';
import { createFileDriver } from '@kk/drivers';

const [storeDir, stateDir, target, project, app, version, slowMs] = process.argv.slice(2);
if (slowMs) {
  const wait = new Int32Array(new SharedArrayBuffer(4));
  for (const name of ['renameSync', 'unlinkSync', 'mkdirSync', 'rmdirSync']) {
    const orig = fs[name];
    fs[name] = (...args) => {
      Atomics.wait(wait, 0, 0, Number(slowMs));
      return orig(...args);
    };
  }
  syncBuiltinESMExports();
}
const hasher = createHasher({ threads: 1 });
const store = await Store.open(createFileDriver({ root: storeDir }));
try {
  const r = await pull({ store, hasher, project, app, version, target, stateDir });
  process.stdout.write(`${JSON.stringify({ ok: true, version: r.version, recovered: r.recovered })}\n`);
} catch (err) {
  process.stdout.write(`${JSON.stringify({ ok: false, code: err?.code ?? null, name: err?.name, message: String(err?.message) })}\n`);
} finally {
  await hasher.close();
}
