// Who pulls, as audit logs and `pull` events name it (issue 10 item 4): the machine's host name
// and a random id kk generates once and keeps in its state directory, so two machines with the
// same host name (clones of one image) stay apart and a machine keeps its id across renames
// of its user. `user@host` alone was neither.
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { defaultStateRoot } from './state.js';

const FILE = 'agent-id';
const ID = /^[0-9a-f]{16}$/;

/**
 * `<hostname>/<stable id>`. The id is read from `<stateDir>/agent-id`, created there on first
 * use (create-if-absent, so concurrent first runs agree on one; a damaged file is replaced).
 * When the state directory cannot be written, the id is `<hostname>/unsaved-<random>`: still
 * unique, but not stable.
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
    const tmp = `${file}.tmp-${process.pid}-${fresh}`;
    try {
      await mkdir(stateDir, { recursive: true });
      await writeFile(tmp, `${fresh}\n`, { mode: 0o644 });
      // link() creates the name only if absent, with the whole content: concurrent first runs agree.
      await link(tmp, file).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
        // Someone else's id, or a damaged file: replace only the latter.
        if (!(await read())) await rename(tmp, file);
      });
      id = await read();
    } catch {
      id = undefined;
    } finally {
      await unlink(tmp).catch(() => {});
    }
    id ??= `unsaved-${fresh}`;
  }
  return `${host}/${id}`;
}
