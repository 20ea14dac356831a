// The tools kk is measured against, driven the way a user would drive them: rsync (local, and
// over ssh to our own sshd on 127.0.0.1), restic and casync. A tool that is not installed is
// reported as missing, never installed from here.
import { join } from 'node:path';
import { exec, have, parseRsyncStats, treeBytes, versionOf } from './util.mjs';

export function detectPeers() {
  const found = {};
  found.rsync = have('rsync') ? { version: versionOf('rsync', ['--version']) } : { missing: 'rsync is not installed' };
  found.sshd = have('/usr/sbin/sshd') && have('ssh') && have('ssh-keygen') ? { version: versionOf('ssh', ['-V']) } : { missing: '/usr/sbin/sshd or ssh is not installed' };
  found.restic = have('restic') ? { version: versionOf('restic', ['version']) } : { missing: 'restic is not installed' };
  found.casync = have('casync') ? { version: versionOf('casync', ['--version']) } : { missing: 'casync is not installed' };
  return found;
}

const RESTIC_ENV = { ...process.env, RESTIC_PASSWORD: 'kk-bench' };

export const restic = {
  init: (repo) => exec('restic', ['init', '--repo', repo, '--quiet'], { env: RESTIC_ENV }),
  /** Back up the contents of `src` (as `.`) with a tag; bytes = growth of the repository. */
  async backup(repo, src, tag) {
    const before = treeBytes(repo);
    const r = await exec('restic', ['-r', repo, 'backup', '--no-cache', '--quiet', '--host', 'bench', '--tag', tag, '.'], { cwd: src, env: RESTIC_ENV });
    return { seconds: r.seconds, bytes: treeBytes(repo) - before };
  },
  async restore(repo, tag, target) {
    const r = await exec('restic', ['-r', repo, 'restore', 'latest', '--tag', tag, '--host', 'bench', '--target', target, '--no-cache', '--quiet'], { env: RESTIC_ENV });
    return { seconds: r.seconds };
  },
};

export const casync = {
  /** `casync make`: a blob index for a file, an archive index for a directory; bytes = store growth + index. */
  async make(store, index, path) {
    const before = treeBytes(store);
    const r = await exec('casync', ['make', `--store=${store}`, index, path]);
    return { seconds: r.seconds, bytes: treeBytes(store) - before + treeBytes(index) };
  },
  /** `casync extract`; an existing output is used as a seed and extra files are deleted (its defaults). */
  async extract(store, index, out, flags = []) {
    const r = await exec('casync', ['extract', `--store=${store}`, ...flags, index, out]);
    return { seconds: r.seconds };
  },
};

/** rsync `src/` onto `dst/`, locally or to `ssh` (an sshd backend); bytes = sent + received. */
export async function rsync(src, dst, { ssh, flags = [] } = {}) {
  const args = ['-a', '--stats', ...flags];
  let dest = `${dst}/`;
  if (ssh) {
    args.push('-e', ssh.sshCommand);
    dest = `${ssh.user}@${ssh.host}:${dst}/`;
  }
  const r = await exec('rsync', [...args, `${src}/`, dest]);
  const s = parseRsyncStats(r.stdout);
  return { seconds: r.seconds, bytes: s.sent + s.received, extra: { literal: s.literal, matched: s.matched } };
}

export const casyncIndex = (dir, name, isFile) => join(dir, `${name}.${isFile ? 'caibx' : 'caidx'}`);
