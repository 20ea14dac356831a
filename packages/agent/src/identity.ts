// The agent's identity on disk: `<state dir>/agent.json` holds the server URL, the node id and its
// node token, mode 0600, written atomically. Enrolment happens once; later starts read it.
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { KkError } from '@kk/core';
import type { Identity } from './api.js';

export interface StoredIdentity extends Identity {
  server: string;
  name: string;
  enrolled: string;
}

export function identityFile(stateDir: string): string {
  return join(stateDir, 'agent.json');
}

export async function loadIdentity(stateDir: string): Promise<StoredIdentity | undefined> {
  let text: string;
  try {
    text = await readFile(identityFile(stateDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const j = JSON.parse(text) as StoredIdentity;
    if (typeof j.node !== 'string' || typeof j.token !== 'string') throw new Error('missing node or token');
    return j;
  } catch (err) {
    throw new KkError('CONFIG_INVALID', `${identityFile(stateDir)} is damaged: ${(err as Error).message}`, { hint: 'remove it and enrol the agent again with a new registration token' });
  }
}

export async function saveIdentity(stateDir: string, id: StoredIdentity): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const file = identityFile(stateDir);
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(id, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
}
