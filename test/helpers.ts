// Shared helpers for the cross-package acceptance tests of @kk/core with the file store.
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, lstat, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store, createHasher, type Hasher } from '@kk/core';
import { createFileDriver } from '@kk/drivers';

export interface Sandbox {
  root: string;
  storeDir: string;
  stateDir: string;
  store: Store;
  hasher: Hasher;
  path(...p: string[]): string;
  cleanup(): Promise<void>;
}

export async function sandbox(): Promise<Sandbox> {
  const root = await mkdtemp(join(tmpdir(), 'kk-test-'));
  const storeDir = join(root, 'store');
  const stateDir = join(root, 'state');
  const store = await Store.open(createFileDriver({ root: storeDir }), { create: true });
  const hasher = createHasher({ threads: 2 });
  return {
    root,
    storeDir,
    stateDir,
    store,
    hasher,
    path: (...p) => join(root, ...p),
    async cleanup() {
      await hasher.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

export type Snap = Map<string, { type: 'file' | 'dir' | 'symlink'; mode: number; mtimeMs?: number; sha256?: string }>;

/** Everything under `dir` (not following symlinks), excluding paths for which `skip` is true. */
export async function snapshot(dir: string, skip: (rel: string) => boolean = () => false): Promise<Snap> {
  const out: Snap = new Map();
  async function walk(rel: string) {
    for (const d of await readdir(join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${d.name}` : d.name;
      if (skip(p)) continue;
      const st = await lstat(join(dir, p));
      if (st.isSymbolicLink()) out.set(p, { type: 'symlink', mode: 0 });
      else if (st.isDirectory()) {
        out.set(p, { type: 'dir', mode: st.mode & 0o7777 });
        await walk(p);
      } else {
        const sha256 = createHash('sha256').update(await readFile(join(dir, p))).digest('hex');
        out.set(p, { type: 'file', mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs), sha256 });
      }
    }
  }
  await walk('');
  return out;
}

export function sha256File(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
