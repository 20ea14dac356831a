// Who pulls, as audit logs and `pull` events name it (issue 10 item 4): the machine's host name
// and a random id kk generates once and keeps in its state directory, so two machines with the
// same host name (clones of one image) stay apart and a machine keeps its id across renames
// of its user. `user@host` alone was neither.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { defaultStateRoot } from './state.js';

const FILE = 'agent-id';
const ID = /^[0-9a-f]{16}$/;

/**
 * `<hostname>/<stable id>`. The id is read from `<stateDir>/agent-id`, created there on first use
 * (create-if-absent, so concurrent first runs agree on one). When the state directory cannot be
 * written, the id is `<hostname>/unsaved-<random>`: still unique, but not stable.
 */
export async function agentId(stateDir: string = defaultStateRoot()): Promise<string> {
  const host = hostname() || 'localhost';
  const file = join(stateDir, FILE);
  const read = async () => {
    try {
      const id = (await readFile(file, 'utf8')).trim();
      return ID.test(id) ? id : undefined;
    } catch {
      return undefined;
    }
  };
  let id = await read();
  if (!id) {
    const fresh = randomBytes(8).toString('hex');
    try {
      await mkdir(stateDir, { recursive: true });
      await writeFile(file, `${fresh}\n`, { flag: 'wx', mode: 0o644 });
      id = fresh;
    } catch (err) {
      // Another kk wrote it first (EEXIST): use theirs. A damaged file is replaced.
      id = await read();
      if (!id && (err as NodeJS.ErrnoException).code === 'EEXIST') {
        await writeFile(file, `${fresh}\n`).then(
          () => (id = fresh),
          () => {},
        );
      }
      id ??= `unsaved-${fresh}`;
    }
  }
  return `${host}/${id}`;
}
