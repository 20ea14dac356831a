// Where kk keeps its local state: outside deploy directories, keyed by absolute path.
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

/** `$KK_STATE_DIR`, else `$XDG_STATE_HOME/kk`, else `~/.local/state/kk`. */
export function defaultStateRoot(): string {
  if (process.env.KK_STATE_DIR) return resolve(process.env.KK_STATE_DIR);
  const xdg = process.env.XDG_STATE_HOME;
  return join(xdg ? resolve(xdg) : join(homedir(), '.local', 'state'), 'kk');
}

/** A stable directory name for an absolute path: readable tail + hash of the whole path. */
export function pathKey(absPath: string): string {
  const abs = resolve(absPath);
  const tail = abs.split('/').filter(Boolean).slice(-2).join('_').replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 48);
  return `${tail || 'root'}-${createHash('sha256').update(abs).digest('hex').slice(0, 16)}`;
}

export async function readJsonFile<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if (err instanceof SyntaxError) return undefined;
    throw err;
  }
}

/** Write a file atomically and durably: temp file, fsync, rename. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}
