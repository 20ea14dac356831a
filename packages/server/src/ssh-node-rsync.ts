// The pieces of an ssh node's sync that do not need the server (DESIGN 13, seed 000 "ssh +
// rsync"): the node's address and ssh options as `ssh` arguments, a target's ignore rules
// (gitignore syntax, last match wins) as rsync filter rules (first match wins), the rsync command
// line, and what rsync's exit status, stderr and `--stats` say. Pure functions; ssh-nodes.ts runs them.
import { KkError, RESERVED_TOP_LEVEL } from '@kk/core';

/** Paths never synced to a node unless a target says otherwise (the agent's defaults, seed 000). */
export const DEFAULT_SSH_IGNORE = ['.git/', 'runtime/', 'tmp/'];

/** How the server reaches an ssh node, besides its address (kept per node, see ssh-nodes.ts). */
export interface SshNodeSettings {
  /** Private key on the server (`ssh -i`). Default: KK_SSH_IDENTITY, else ssh's own defaults. */
  identity_file?: string;
  /** known_hosts file on the server. Default: `<state>/ssh_known_hosts`. */
  known_hosts?: string;
  /** `accept-new` (default: trust on first use, refuse a changed key), `yes` (only known keys) or `no`. */
  strict_host_key_checking?: 'accept-new' | 'yes' | 'no';
  /** Seconds to wait for the TCP connection. Default 10. */
  connect_timeout_s?: number;
  /** rsync on the node when it is not on the login PATH. */
  rsync_path?: string;
  /** Compare by size and mtime only (rsync's quick check) instead of checksums. Default false: byte-exact. */
  quick_check?: boolean;
}

export const STRICT_MODES = ['accept-new', 'yes', 'no'] as const;

export interface SshAddress {
  user: string | undefined;
  host: string;
  port: number;
}

/** `user@host[:port]`, `[v6]:port` or `ssh://user@host:port`, as the node record holds it. */
export function parseSshAddress(address: string | null | undefined): SshAddress {
  const bad = () => new KkError('CONFIG_INVALID', `ssh node address ${JSON.stringify(address)} is not user@host[:port]`, { hint: 'for example deploy@web-1.internal:22' });
  if (!address) throw bad();
  const a = address.replace(/^ssh:\/\//, '').replace(/\/$/, '');
  const m = /^(?:([^@\s:/]+)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(a);
  if (!m) throw bad();
  const port = m[3] ? Number(m[3]) : 22;
  if (!(port >= 1 && port <= 65535)) throw bad();
  return { user: m[1], host: m[2]!.replace(/^\[|\]$/g, ''), port };
}

/** `user@host` for ssh / rsync (IPv6 in brackets for rsync's `host:path`). */
export function destination(a: SshAddress, forRsync = false): string {
  const host = forRsync && a.host.includes(':') ? `[${a.host}]` : a.host;
  return a.user ? `${a.user}@${host}` : host;
}

export function checkSettings(s: unknown): SshNodeSettings {
  if (s == null) return {};
  if (typeof s !== 'object' || Array.isArray(s)) throw new KkError('CONFIG_INVALID', 'ssh settings must be an object');
  const o = s as Record<string, unknown>;
  const known = ['identity_file', 'known_hosts', 'strict_host_key_checking', 'connect_timeout_s', 'rsync_path', 'quick_check'];
  for (const k of Object.keys(o)) if (!known.includes(k)) throw new KkError('CONFIG_INVALID', `unknown ssh setting ${JSON.stringify(k)}`, { hint: `known: ${known.join(', ')}` });
  const out: SshNodeSettings = {};
  for (const k of ['identity_file', 'known_hosts'] as const) {
    if (o[k] == null) continue;
    if (typeof o[k] !== 'string' || !(o[k] as string).startsWith('/') || (o[k] as string).includes('\0')) throw new KkError('CONFIG_INVALID', `ssh ${k} must be an absolute path on the server`);
    out[k] = o[k] as string;
  }
  if (o.strict_host_key_checking != null) {
    if (!STRICT_MODES.includes(o.strict_host_key_checking as never)) throw new KkError('CONFIG_INVALID', `strict_host_key_checking must be one of ${STRICT_MODES.join(', ')}`);
    out.strict_host_key_checking = o.strict_host_key_checking as SshNodeSettings['strict_host_key_checking'];
  }
  if (o.connect_timeout_s != null) {
    if (!Number.isInteger(o.connect_timeout_s) || (o.connect_timeout_s as number) < 1 || (o.connect_timeout_s as number) > 600) throw new KkError('CONFIG_INVALID', 'connect_timeout_s must be 1..600 seconds');
    out.connect_timeout_s = o.connect_timeout_s as number;
  }
  if (o.rsync_path != null) {
    if (typeof o.rsync_path !== 'string' || !/^[A-Za-z0-9_./-]+$/.test(o.rsync_path)) throw new KkError('CONFIG_INVALID', 'rsync_path must be a path of letters, digits and . _ / -');
    out.rsync_path = o.rsync_path;
  }
  if (o.quick_check != null) {
    if (typeof o.quick_check !== 'boolean') throw new KkError('CONFIG_INVALID', 'quick_check must be true or false');
    out.quick_check = o.quick_check;
  }
  return out;
}

/** `ssh` options (without the destination) for a node. */
export function sshArgs(a: SshAddress, s: SshNodeSettings, defaults: { knownHosts: string; identityFile?: string }): string[] {
  const id = s.identity_file ?? defaults.identityFile;
  return [
    '-o', 'BatchMode=yes',
    '-o', `StrictHostKeyChecking=${s.strict_host_key_checking ?? 'accept-new'}`,
    '-o', `UserKnownHostsFile=${s.known_hosts ?? defaults.knownHosts}`,
    '-o', `ConnectTimeout=${s.connect_timeout_s ?? 10}`,
    '-o', 'ServerAliveInterval=15',
    '-o', 'ServerAliveCountMax=4',
    '-o', 'LogLevel=ERROR',
    '-p', String(a.port),
    ...(id ? ['-i', id, '-o', 'IdentitiesOnly=yes'] : []),
  ];
}

/** One argument quoted for rsync's `-e` (which splits on spaces and honours quotes). */
export function quoteArg(s: string): string {
  return /^[A-Za-z0-9_./=:@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * A target's ignore rules (gitignore syntax, later rules win) as rsync filter rules (the first
 * match wins): the order reversed, `!p` as `+ p`, patterns with an inner slash anchored at the
 * root as gitignore does, and kk's staging directory always excluded. With `include`, only what it
 * names is synced (directories it names with all they hold).
 */
export function rsyncFilterRules(t: { include: string[]; exclude: string[] }, versionRules: string[] = []): string[] {
  const git: string[] = [...DEFAULT_SSH_IGNORE, ...t.exclude, ...versionRules];
  const out: string[] = [`- /${RESERVED_TOP_LEVEL}/`];
  for (const p of [...git].reverse()) {
    const r = rsyncRule(p);
    if (r) out.push(r);
  }
  if (t.include.length) {
    for (const p of [...t.include].reverse()) {
      const r = rsyncRule(`!${p}`);
      if (!r) continue;
      if (r.endsWith('/')) out.push(`${r}**`);
      out.push(r);
    }
    out.push('+ */', '- *');
  }
  return out;
}

function rsyncRule(p: string): string | undefined {
  let pat = /\\ $/.test(p) ? p : p.replace(/\s+$/, '');
  if (!pat || pat.startsWith('#')) return undefined;
  let sign = '-';
  if (pat.startsWith('!')) {
    sign = '+';
    pat = pat.slice(1);
  } else if (pat.startsWith('\\!') || pat.startsWith('\\#')) pat = pat.slice(1);
  while (pat.startsWith('**/')) pat = pat.slice(3);
  const body = pat.endsWith('/') ? pat.slice(0, -1) : pat;
  if (!body) return undefined;
  // gitignore: a slash at the start or in the middle anchors the pattern at the root.
  if (!pat.startsWith('/') && body.includes('/')) pat = `/${pat}`;
  return `${sign} ${pat}`;
}

/**
 * The rsync arguments of one sync: `src` is the materialized version, `dest` the node's target
 * path. `skipExisting` (a target's mode skip-existing): `--ignore-existing` and never `--delete`.
 */
export function rsyncArgs(o: { ssh: string[]; filterFile: string; src: string; dest: string; address: SshAddress; mirror: boolean; skipExisting?: boolean; settings: SshNodeSettings; timeoutS?: number }): string[] {
  return [
    '-az',
    ...(o.skipExisting ? ['--ignore-existing'] : o.mirror ? ['--delete'] : []),
    '--delay-updates',
    '--safe-links',
    `--exclude-from=${o.filterFile}`,
    ...(o.settings.quick_check ? [] : ['--checksum']),
    '--mkpath',
    ...reportAndRoute(o),
  ];
}

/** What a sync and a verify share: itemized output and stats, the timeout, ssh, source and destination. */
function reportAndRoute(o: { ssh: string[]; src: string; dest: string; address: SshAddress; settings: SshNodeSettings; timeoutS?: number }): string[] {
  return [
    '--itemize-changes',
    '--stats',
    '--no-human-readable',
    `--timeout=${o.timeoutS ?? 120}`,
    ...(o.settings.rsync_path ? [`--rsync-path=${o.settings.rsync_path}`] : []),
    '-e',
    ['ssh', ...o.ssh].map(quoteArg).join(' '),
    `${o.src.replace(/\/$/, '')}/`,
    `${destination(o.address, true)}:${o.dest}/`,
  ];
}

/**
 * The rsync arguments of a verify: a dry run with checksums (`-rlptcn`, no owner/group) that
 * itemizes every file differing from the materialized version; `--delete` (mirror) also lists
 * files the version does not have. Nothing on the node is changed.
 */
export function rsyncVerifyArgs(o: { ssh: string[]; filterFile: string; src: string; dest: string; address: SshAddress; mirror: boolean; skipExisting?: boolean; settings: SshNodeSettings; timeoutS?: number }): string[] {
  return [
    '-rlptcn',
    // skip-existing never compares what the node has: only files it lacks are differences.
    ...(o.skipExisting ? ['--ignore-existing'] : o.mirror ? ['--delete'] : []),
    `--exclude-from=${o.filterFile}`,
    ...reportAndRoute(o),
  ];
}

/** What one itemized line of a verify dry run says is wrong on the node (undefined: nothing, or a directory's times). */
export function verifyProblem(line: string): { path: string; problem: string } | undefined {
  if (line.startsWith('*deleting ')) {
    const path = line.slice('*deleting '.length).trim();
    return { path, problem: path.endsWith('/') ? 'directory not in the version' : 'not in the version' };
  }
  const m = /^([<>ch.*])([fdLDS])([^ ]{9,10}) (.+)$/.exec(line);
  if (!m) return undefined;
  const [, , kind, flags, path] = m as unknown as [string, string, string, string, string];
  if (flags.startsWith('+++')) return { path, problem: kind === 'd' ? 'directory missing' : 'missing' };
  if (kind === 'd') return flags[3] === 'p' ? { path, problem: 'mode changed' } : undefined;
  if (kind !== 'f') return { path, problem: 'not a file' };
  if (flags[0] === 'c' || flags[1] === 's') return { path, problem: 'changed locally' };
  if (flags[3] === 'p') return { path, problem: 'mode changed' };
  if (flags[2] === 't' || flags[2] === 'T') return { path, problem: 'modified time changed' };
  return undefined;
}

/** rsync's exit statuses (man rsync, EXIT VALUES) and whether another attempt can help. */
export const RSYNC_EXIT: Record<number, { what: string; retryable: boolean }> = {
  1: { what: 'syntax or usage error', retryable: false },
  2: { what: 'protocol incompatibility', retryable: false },
  3: { what: 'errors selecting input/output files, dirs', retryable: false },
  4: { what: 'requested action not supported', retryable: false },
  5: { what: 'error starting client-server protocol', retryable: true },
  6: { what: 'daemon unable to append to log-file', retryable: false },
  10: { what: 'error in socket I/O', retryable: true },
  11: { what: 'error in file I/O', retryable: true },
  12: { what: 'error in rsync protocol data stream', retryable: true },
  13: { what: 'errors with program diagnostics', retryable: false },
  14: { what: 'error in IPC code', retryable: true },
  20: { what: 'received SIGUSR1 or SIGINT', retryable: true },
  21: { what: 'some error returned by waitpid()', retryable: true },
  22: { what: 'error allocating core memory buffers', retryable: true },
  23: { what: 'partial transfer due to error', retryable: true },
  24: { what: 'partial transfer due to vanished source files', retryable: true },
  25: { what: 'the --max-delete limit stopped deletions', retryable: false },
  30: { what: 'timeout in data send/receive', retryable: true },
  35: { what: 'timeout waiting for daemon connection', retryable: true },
  255: { what: 'ssh failed', retryable: true },
};

export interface Failure {
  code: string;
  reason: string;
  retryable: boolean;
}

/**
 * What a failed ssh or rsync run means, from its exit status and the last lines of its stderr:
 * the causes a person must fix (login refused, host key changed, permission, rsync missing on the
 * node) are final; a node that cannot be reached, a full disk or a cut connection are retried.
 */
export function classifyFailure(tool: 'ssh' | 'rsync', status: number | null, signal: string | null, stderr: string, where: string): Failure {
  const tail = stderr.split(/\r?\n/).map((l) => l.trim()).filter(Boolean).slice(-3).join(' | ').slice(0, 600);
  const said = tail ? `: ${tail}` : '';
  if (status === null) return { code: 'RSYNC_KILLED', reason: `${tool} to ${where} was stopped by ${signal ?? 'a signal'}`, retryable: true };
  if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No .* host key is known/i.test(stderr)) {
    return { code: 'SSH_HOST_KEY', reason: `the host key of ${where} is not trusted${said}`, retryable: false };
  }
  if (/Permission denied \((publickey|password|keyboard|gssapi|hostbased)/i.test(stderr) || /Too many authentication failures/i.test(stderr)) {
    return { code: 'AUTH', reason: `ssh login to ${where} was refused (check the node's user and identity file, and the key in its authorized_keys)${said}`, retryable: false };
  }
  if (/No space left on device|Disk quota exceeded/i.test(stderr)) return { code: 'DISK_FULL', reason: `the disk of ${where} is full${said}`, retryable: true };
  if (/(rsync|rsync_path).*(command not found|not found|No such file)/i.test(stderr) && (status === 12 || status === 127 || status === 14)) {
    return { code: 'RSYNC_MISSING', reason: `rsync is not installed on ${where} (install it there, or set the node's rsync_path)${said}`, retryable: false };
  }
  if (/Connection refused|Connection timed out|timed out|No route to host|Network is unreachable|Could not resolve hostname|Connection closed|Connection reset|kex_exchange_identification|Broken pipe/i.test(stderr) || (status === 255 && !tail)) {
    return { code: 'SSH_UNREACHABLE', reason: `cannot reach ${where} over ssh${said}`, retryable: true };
  }
  if (/Permission denied|Operation not permitted|Read-only file system/i.test(stderr)) {
    return { code: 'FORBIDDEN', reason: `the ssh user may not write on ${where}${said}`, retryable: false };
  }
  if (tool === 'ssh') return { code: status === 255 ? 'SSH_UNREACHABLE' : 'SSH_FAILED', reason: `ssh to ${where} exited with ${status}${said}`, retryable: status === 255 };
  const known = RSYNC_EXIT[status];
  return { code: `RSYNC_${status}`, reason: `rsync to ${where} exited with ${status} (${known?.what ?? 'unknown status'})${said}`, retryable: known?.retryable ?? true };
}

/** Counts from rsync's `--itemize-changes` lines. */
export class ItemizeCounter {
  added = 0;
  /** Content or metadata changed (as the agent counts files_changed). */
  changed = 0;
  /** Of those, only metadata (mode, mtime). */
  metaOnly = 0;
  deleted = 0;

  /** True when `line` is an itemized change (and counted). */
  add(line: string): boolean {
    if (line.startsWith('*deleting ')) {
      if (!line.endsWith('/')) this.deleted++;
      return true;
    }
    const m = /^([<>ch.*])([fdLDS])([^ ]{9,10}) (.+)$/.exec(line);
    if (!m) return false;
    if (m[2] !== 'f') return true;
    if (m[3]!.startsWith('+++')) this.added++;
    else {
      this.changed++;
      if (m[3]![0] !== 'c' && m[3]![1] !== 's') this.metaOnly++;
    }
    return true;
  }
}

/** The numbers of rsync's `--stats` block that a task's result keeps. */
export function parseStats(text: string): { bytes_sent?: number; bytes_received?: number; total_file_size?: number; transferred_file_size?: number; files?: number; regular_files?: number } {
  const num = (re: RegExp) => {
    const m = re.exec(text);
    return m ? Number(m[1]!.replace(/,/g, '')) : undefined;
  };
  const out: Record<string, number> = {};
  const put = (k: string, v: number | undefined) => v !== undefined && Number.isFinite(v) && (out[k] = v);
  put('bytes_sent', num(/^Total bytes sent: ([\d,]+)/m));
  put('bytes_received', num(/^Total bytes received: ([\d,]+)/m));
  put('total_file_size', num(/^Total file size: ([\d,]+)/m));
  put('transferred_file_size', num(/^Total transferred file size: ([\d,]+)/m));
  put('files', num(/^Number of files: ([\d,]+)/m));
  put('regular_files', num(/^Number of files: [\d,]+ \(reg: ([\d,]+)/m));
  return out;
}
