// Batched durability: one syncfs(2) flushes every file written on a file system, far cheaper
// than an fsync per file (each fsync forces a journal commit). Node has no syncfs binding, so
// this runs coreutils `sync --file-system`; where that is missing, callers fsync file by file.
import { spawn } from 'node:child_process';
import { open } from 'node:fs/promises';

let syncfsWorks: boolean | undefined;

/** Flush the file system holding `path`. Resolves false if that could not be done this way. */
export async function syncFileSystem(path: string): Promise<boolean> {
  if (syncfsWorks === false) return false;
  const ok = await new Promise<boolean>((resolve) => {
    const child = spawn('sync', ['--file-system', path], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('exit', (code) => resolve(code === 0));
  });
  syncfsWorks ??= ok;
  return ok;
}

/** fsync each file (and nothing else): the fallback when syncfs is unavailable. */
export async function fsyncFiles(paths: Iterable<string>, concurrency = 16): Promise<void> {
  const list = [...paths];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, list.length) }, async () => {
      for (let i = next++; i < list.length; i = next++) {
        const fh = await open(list[i]!, 'r').catch(() => undefined);
        if (!fh) continue;
        await fh.sync().catch(() => {});
        await fh.close();
      }
    }),
  );
}

/** Make files durable: syncfs of their file system, else an fsync per file. */
export async function makeDurable(fsRoot: string, files: Iterable<string>): Promise<void> {
  if (!(await syncFileSystem(fsRoot))) await fsyncFiles(files);
}
