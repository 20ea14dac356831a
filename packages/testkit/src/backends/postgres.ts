// A real PostgreSQL for tests: initdb into a fresh temp directory, then `postgres` on 127.0.0.1
// and a free port, its unix socket inside that directory. PostgreSQL refuses to run as root, so
// as root both run as the `postgres` user (`runuser -u postgres --`) and the directory is handed
// to that user; as any other user they run as that user. stop() shuts the server down (fast
// shutdown: open sessions are cut) and removes the directory. Debian's binaries live in
// /usr/lib/postgresql/<major>/bin (`KK_PG_BIN` overrides).
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { guardChild, waitForLine } from './process.js';

const run = promisify(execFile);

/** Ends the postmaster (pid file argv[1]) and removes argv[2] when its stdin closes: our process is gone. */
const WATCHDOG = `
const fs = require('node:fs');
const [pidFile, dir] = process.argv.slice(1);
process.stdin.on('error', () => {});
process.stdin.resume();
process.stdin.on('end', () => {
  let pid = 0;
  try { pid = Number(fs.readFileSync(pidFile, 'utf8').split('\\n')[0]); } catch {}
  if (pid) { try { process.kill(pid, 'SIGQUIT'); } catch {} }
  let n = 0;
  const t = setInterval(() => {
    let alive = false;
    if (pid) { try { process.kill(pid, 0); alive = true; } catch {} }
    if (!alive || ++n > 100) { clearInterval(t); try { fs.rmSync(dir, { recursive: true, force: true }); } catch {} process.exit(0); }
  }, 100);
});
`;

export interface PostgresOptions {
  /** How long to wait for the server to accept connections. Default: 30 s. */
  startTimeoutMs?: number;
}

export interface PostgresBackend {
  host: '127.0.0.1';
  port: number;
  /** The superuser (trust authentication on 127.0.0.1: any password is accepted). */
  user: string;
  /** `postgres://user@127.0.0.1:port/<db>` (default db `postgres`). */
  url(db?: string): string;
  /** Create a fresh empty database and return its URL (a random name by default). */
  createDatabase(name?: string): Promise<string>;
  /** Stop the server and remove its data. Idempotent. */
  stop(): Promise<void>;
}

/** The directory holding initdb and postgres, or undefined. */
export function postgresBinDir(): string | undefined {
  const env = process.env.KK_PG_BIN;
  if (env) return existsSync(path.join(env, 'postgres')) ? env : undefined;
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const majors = readdirSync(root)
    .filter((d) => /^\d+$/.test(d) && existsSync(path.join(root, d, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  return majors.length ? path.join(root, majors[0]!, 'bin') : undefined;
}

function runAsUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) return undefined;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/** Why PostgreSQL cannot run here, or undefined when it can. */
export function postgresUnavailable(): string | undefined {
  const bin = postgresBinDir();
  if (!bin || !existsSync(path.join(bin, 'initdb'))) return 'PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql, or set KK_PG_BIN)';
  if (process.getuid?.() === 0 && !runAsUser()) return 'running as root and there is no postgres user to run PostgreSQL as';
  if (process.getuid?.() === 0 && !existsSync('/usr/sbin/runuser') && !existsSync('/sbin/runuser')) return 'running as root and runuser is missing';
  return undefined;
}

/** argv to run `bin/<prog> args` as the right user. */
function command(bin: string, prog: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', path.join(bin, prog), ...args]] : [path.join(bin, prog), args];
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Starts a throwaway PostgreSQL. Rejects, with its output, if it does not come up. */
export async function startPostgres(opts: PostgresOptions = {}): Promise<PostgresBackend> {
  const why = postgresUnavailable();
  if (why) throw new Error(`PostgreSQL cannot start: ${why}`);
  const bin = postgresBinDir()!;
  const dir = await mkdtemp(path.join(tmpdir(), 'kk-pg-'));
  const data = path.join(dir, 'data');
  const owner = runAsUser();
  const user = 'postgres';
  try {
    if (owner) await chown(dir, owner.uid, owner.gid);
    const [cmd, args] = command(bin, 'initdb', ['-D', data, '-U', user, '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions']);
    await run(cmd, args, { timeout: 60_000 });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    const e = err as { stderr?: string; message: string };
    throw new Error(`PostgreSQL did not start: initdb failed: ${e.stderr?.trim() || e.message}`);
  }
  const port = await freePort();
  const [cmd, args] = command(bin, 'postgres', [
    '-D', data,
    '-h', '127.0.0.1',
    '-p', String(port),
    '-k', dir,
    // A test database: speed over crash safety.
    '-c', 'fsync=off',
    '-c', 'synchronous_commit=off',
    '-c', 'full_page_writes=off',
    '-c', 'max_connections=200',
    '-c', 'shared_buffers=32MB',
    '-c', 'logging_collector=off',
  ]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const postmasterPid = (): number | undefined => {
    try {
      return Number(readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[0]) || undefined;
    } catch {
      return undefined;
    }
  };
  const signal = (sig: NodeJS.Signals) => {
    const pid = postmasterPid();
    if (pid) {
      try {
        process.kill(pid, sig);
      } catch {
        /* already gone */
      }
    }
  };
  // runuser does not pass every signal on: stop the postmaster itself (SIGINT = fast shutdown),
  // and if this process exits without stop(), SIGQUIT it (immediate shutdown). A process killed
  // outright (a test worker ended by its pool) runs no exit handler: a watchdog child holding a
  // pipe to us does it then, and removes the directory.
  const onExit = () => signal('SIGQUIT');
  process.once('exit', onExit);
  const watchdog = spawn(process.execPath, ['-e', WATCHDOG, path.join(data, 'postmaster.pid'), dir], { stdio: ['pipe', 'ignore', 'ignore'], env: { ...process.env, NODE_OPTIONS: '' } });
  watchdog.stdin!.on('error', () => {});
  watchdog.unref();
  (watchdog.stdin as unknown as { unref?: () => void }).unref?.();
  const stopChildAndClean = guardChild(child, async () => {
    process.off('exit', onExit);
    watchdog.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });
  const stop = async () => {
    signal('SIGINT');
    await stopChildAndClean();
  };
  try {
    await waitForLine(child, 'postgres', /database system is ready to accept connections/, opts.startTimeoutMs ?? 30_000);
  } catch (err) {
    await stop();
    throw err;
  }
  const url = (db = 'postgres') => `postgres://${user}@127.0.0.1:${port}/${db}`;
  return {
    host: '127.0.0.1',
    port,
    user,
    url,
    async createDatabase(name = `kk_${randomBytes(5).toString('hex')}`) {
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`bad database name ${name}`);
      const [c, a] = command(bin, 'createdb', ['-h', '127.0.0.1', '-p', String(port), '-U', user, name]);
      await run(c, a, { timeout: 30_000 });
      return url(name);
    },
    stop,
  };
}
