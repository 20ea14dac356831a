// The kk server over a file store, for bench/run.mjs's kk-http runs: its own process, as in a
// real deployment. Prints its base URL as one line, then serves until SIGTERM.
//   KK_TOKEN=secret node bench/kk-serve.mjs --store DIR
import { resolve } from 'node:path';
import { startServer } from '@kk/server';

const i = process.argv.indexOf('--store');
if (i < 0 || !process.argv[i + 1]) throw new TypeError('usage: KK_TOKEN=... node bench/kk-serve.mjs --store DIR');
if (!process.env.KK_TOKEN) throw new TypeError('KK_TOKEN must hold the admin token');
const running = await startServer({ store: resolve(process.argv[i + 1]), adminToken: process.env.KK_TOKEN, listen: { host: '127.0.0.1', port: 0 }, log: false });
process.stdout.write(`${running.url}\n`);
const stop = () => running.close().finally(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
