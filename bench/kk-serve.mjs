// The kk server over a file store, for bench/run.mjs's kk-http runs: its own process, as in a
// real deployment. Prints its base URL as one line, then serves until SIGTERM.
//   KK_TOKEN=secret node bench/kk-serve.mjs --store DIR [--packs small]
// --packs small creates a new store with the pack policy `kk push` gives new stores (small chunks
// in packs); without it the server creates its store as `kk serve` does (loose chunks).
import { resolve } from 'node:path';
import { DEFAULT_PACK_POLICY, Store } from '@kk/core';
import { createFileDriver } from '@kk/drivers';
import { startServer } from '@kk/server';

const arg = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
};
const dir = arg('store');
if (!dir) throw new TypeError('usage: KK_TOKEN=... node bench/kk-serve.mjs --store DIR [--packs small]');
if (!process.env.KK_TOKEN) throw new TypeError('KK_TOKEN must hold the admin token');
const packs = arg('packs');
if (packs !== undefined && packs !== 'small') throw new TypeError(`--packs takes "small", got ${packs}`);
if (packs) await (await Store.open(createFileDriver({ root: resolve(dir) }), { create: true, packs: DEFAULT_PACK_POLICY })).close();
const running = await startServer({ store: resolve(dir), adminToken: process.env.KK_TOKEN, listen: { host: '127.0.0.1', port: 0 }, log: false });
process.stdout.write(`${running.url}\n`);
const stop = () => running.close().finally(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
