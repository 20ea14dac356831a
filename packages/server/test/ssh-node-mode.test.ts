// A target's sync mode on an ssh node (seed 004): skip-existing is `rsync --ignore-existing`
// without `--delete`, even for a mirror. Run for real over the testkit's sshd on 127.0.0.1: a file
// the node already has keeps its bytes though the version's differ, a file the version lacks stays,
// and what the node lacks is added. Mode full (a mirror) makes the directory the version.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SshdBackend, startSshd, sshdUnavailable } from '@kk/testkit';
import { rsyncArgs, rsyncFilterRules, rsyncVerifyArgs, sshArgs, verifyProblem } from '../src/ssh-node-rsync.js';

const run = promisify(execFile);
const why = sshdUnavailable();

async function files(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out[join(e.parentPath, e.name).slice(root.length + 1)] = await readFile(join(e.parentPath, e.name), 'utf8');
  }
  return out;
}

describe.skipIf(why !== undefined && process.env.CI !== 'true')('ssh node sync modes over a real sshd', () => {
  let dir: string;
  let sshd: SshdBackend;

  beforeAll(async () => {
    if (why) throw new Error(`CI=true but ${why}`);
    dir = await mkdtemp(join(tmpdir(), 'kk-ssh-mode-'));
    sshd = await startSshd();
    await mkdir(join(dir, 'version', 'js'), { recursive: true });
    await writeFile(join(dir, 'version', 'index.html'), '<h1>v2</h1>');
    await writeFile(join(dir, 'version', 'js', 'app.js'), 'console.log(2)');
    await writeFile(join(dir, 'filter'), `${rsyncFilterRules({ include: [], exclude: [] }).join('\n')}\n`);
  }, 60_000);

  afterAll(async () => {
    await sshd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** What rsyncArgs and rsyncVerifyArgs take for the test's node and version. */
  const on = (dest: string, skipExisting: boolean) => ({
    ssh: sshArgs({ user: sshd.user, host: '127.0.0.1', port: sshd.port }, { identity_file: sshd.keyFile }, { knownHosts: join(dir, 'known_hosts') }),
    filterFile: join(dir, 'filter'),
    src: join(dir, 'version'),
    dest,
    address: { user: sshd.user, host: '127.0.0.1', port: sshd.port },
    mirror: true,
    skipExisting,
    settings: { identity_file: sshd.keyFile },
  });
  const sync = async (dest: string, skipExisting: boolean) => {
    const args = rsyncArgs(on(dest, skipExisting));
    await run('rsync', args);
    return args;
  };

  it('skip-existing: --ignore-existing, no --delete; an existing differing file keeps its bytes; full mirrors', async () => {
    const dest = join(dir, 'node', 'site');
    await mkdir(dest, { recursive: true });
    await writeFile(join(dest, 'index.html'), 'edited on the node');
    await writeFile(join(dest, 'extra.txt'), 'not in the version');
    const args = await sync(dest, true);
    expect(args).toContain('--ignore-existing');
    expect(args).not.toContain('--delete');
    expect(await files(dest)).toEqual({ 'index.html': 'edited on the node', 'extra.txt': 'not in the version', 'js/app.js': 'console.log(2)' });
    // Its verify (a checksum dry run with --ignore-existing) finds only what the node lacks.
    const verify = async () => {
      const { stdout } = await run('rsync', rsyncVerifyArgs(on(dest, true)));
      return stdout.split('\n').map((l) => verifyProblem(l)).filter((p) => p !== undefined).map((p) => p.path);
    };
    expect(await verify()).toEqual([]);
    await rm(join(dest, 'js', 'app.js'));
    expect(await verify()).toEqual(['js/app.js']);
    expect(await sync(dest, false)).toContain('--delete');
    expect(await files(dest)).toEqual({ 'index.html': '<h1>v2</h1>', 'js/app.js': 'console.log(2)' });
  }, 60_000);
});
