// Child process for the crash test: one pull, killed by the parent at a random moment.
import { Store, createHasher, pull } from '@kk/core';
import { createFileDriver } from '@kk/drivers';

const [storeDir, stateDir, target, version] = process.argv.slice(2);
const hasher = createHasher({ threads: 2 });
const store = await Store.open(createFileDriver({ root: storeDir }));
await pull({ store, hasher, project: 'crash', app: 'app', version, target, stateDir });
await hasher.close();
