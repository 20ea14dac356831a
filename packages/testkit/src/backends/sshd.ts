// A real sshd on 127.0.0.1 for tests and bench/: OpenSSH's own server as a child process with a
// generated host key and user key in a fresh temp directory (removed by stop()), logging in as
// the current user by key only. Nothing on the machine's own ssh configuration is read or changed.
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { guardChild, waitForLine } from './process.js';

const run = promisify(execFile);

export interface SshdOptions {
  /** Path of the sshd binary. Default: `/usr/sbin/sshd`. */
  sshd?: string;
  /** How long to wait for the server to listen and accept a login. Default: 20 s. */
  startTimeoutMs?: number;
}

export interface SshdBackend {
  /** Always `127.0.0.1`. */
  host: string;
  port: number;
  /** The user a client logs in as: the current user. */
  user: string;
  /** The client's private key (no passphrase). */
  keyFile: string;
  /** Options for `ssh` (port, key, no host-key checks, batch mode), without the destination. */
  sshArgs: string[];
  /** The same as one command line, for `rsync -e` and `GIT_SSH_COMMAND`. */
  sshCommand: string;
  /** An ssh_config file with the same settings (`ssh -F`), for clients that take a config file. */
  configFile: string;
  /** `ssh://user@127.0.0.1:port/root?config=...`: an ssh store at `root` (absolute) on this server. */
  storeUrl(root: string): string;
  /** Kill the server and remove its keys and configuration. Idempotent. */
  stop(): Promise<void>;
}

const SSHD = '/usr/sbin/sshd';

/** Why sshd cannot run here (a binary is missing), or undefined when it can. */
export function sshdUnavailable(sshd = SSHD): string | undefined {
  if (!existsSync(sshd)) return `${sshd} is missing (Debian: apt-get install openssh-server)`;
  for (const bin of ['ssh', 'ssh-keygen']) {
    if (!onPath(bin)) return `${bin} is not on PATH (Debian: apt-get install openssh-client)`;
  }
  return undefined;
}

/** Starts sshd on a free port of 127.0.0.1. Rejects, with the server's output, if no login works. */
export async function startSshd(opts: SshdOptions = {}): Promise<SshdBackend> {
  const sshd = opts.sshd ?? SSHD;
  const why = sshdUnavailable(sshd);
  if (why) throw new Error(`sshd cannot start: ${why}`);
  const timeoutMs = opts.startTimeoutMs ?? 20_000;
  const dir = await mkdtemp(path.join(tmpdir(), 'kk-sshd-'));
  try {
    // sshd running as root insists on its privilege-separation directory.
    if (process.getuid?.() === 0) await mkdir('/run/sshd', { recursive: true });
    const hostKey = path.join(dir, 'host_ed25519');
    const keyFile = path.join(dir, 'id_ed25519');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'kk-test-host', '-f', hostKey]);
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'kk-test-user', '-f', keyFile]);
    await writeFile(path.join(dir, 'authorized_keys'), await readFile(`${keyFile}.pub`), { mode: 0o600 });
    const user = userInfo().username;

    // A port picked by the kernel can be taken again before sshd binds it: retry a few times.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const config = path.join(dir, 'sshd_config');
      await writeFile(config, sshdConfig(dir, port, hostKey));
      const child = spawn(sshd, ['-f', config, '-D', '-e'], { stdio: ['ignore', 'ignore', 'pipe'] });
      // The temp dir (keys, config) outlives a failed attempt: the next one reuses it.
      const stopChildOnly = guardChild(child);
      try {
        await waitForLine(child, 'sshd', /Server listening on/, timeoutMs);
      } catch (err) {
        await stopChildOnly();
        if (attempt < 3 && /Address already in use|Bind to port/i.test((err as Error).message)) continue;
        throw err;
      }
      const sshArgs = [
        '-p', String(port),
        '-i', keyFile,
        '-o', 'IdentitiesOnly=yes',
        '-o', 'StrictHostKeyChecking=no',
        '-o', 'UserKnownHostsFile=/dev/null',
        '-o', 'BatchMode=yes',
        '-o', 'LogLevel=ERROR',
      ];
      const configFile = path.join(dir, 'ssh_config');
      await writeFile(configFile, clientConfig(port, user, keyFile));
      const backend: SshdBackend = {
        host: '127.0.0.1',
        port,
        user,
        keyFile,
        sshArgs,
        sshCommand: ['ssh', ...sshArgs].join(' '),
        configFile,
        storeUrl: (root) => `ssh://${user}@127.0.0.1:${port}${root.split('/').map(encodeURIComponent).join('/')}?config=${encodeURIComponent(configFile)}`,
        async stop() {
          await stopChildOnly();
          await rm(dir, { recursive: true, force: true });
        },
      };
      try {
        await run('ssh', [...sshArgs, `${user}@127.0.0.1`, 'true'], { timeout: timeoutMs });
      } catch (err) {
        await backend.stop();
        throw new Error(`sshd started on port ${port} but a key login as ${user} failed: ${(err as Error).message}`);
      }
      return backend;
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

function sshdConfig(dir: string, port: number, hostKey: string): string {
  return [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${hostKey}`,
    `PidFile ${path.join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password',
    // The key files live in a temp dir whose modes sshd would otherwise reject.
    'StrictModes no',
    'UsePAM no',
    'UseDNS no',
    // Tests open many connections at once (rsync per file set, parallel suites).
    'MaxStartups 100',
    'MaxSessions 100',
    'LogLevel INFO',
    'Subsystem sftp internal-sftp',
    '',
  ].join('\n');
}

function clientConfig(port: number, user: string, keyFile: string): string {
  return [
    'Host *',
    '  HostName 127.0.0.1',
    `  Port ${port}`,
    `  User ${user}`,
    `  IdentityFile ${keyFile}`,
    '  IdentitiesOnly yes',
    '  StrictHostKeyChecking no',
    '  UserKnownHostsFile /dev/null',
    '  BatchMode yes',
    '  LogLevel ERROR',
    '',
  ].join('\n');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '').split(path.delimiter).some((d) => d && existsSync(path.join(d, bin)));
}
