// A store on any host reachable by ssh, with nothing of kk installed there: the layout is the
// file store's (a copied directory is a file store and vice versa). The system `ssh` client
// (so ~/.ssh/config, known_hosts, agents and ProxyJump apply) opens one ControlMaster
// connection per driver; over it run a few long-lived `sh -s` sessions speaking the line
// protocol of ssh-agent.sh.ts. Concurrent calls are coalesced: writes travel as one tar stream
// per batch (staged under `.tmp-*`, then hard-linked or renamed into place), reads as one tar
// stream back, existence checks as one list.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { KkError, type KkErrorCode } from '@kk/core';
import type { ByteRange, DriverCapabilities, ObjectInfo, PruneDriver } from '@kk/core';
import { TEMP_PREFIX, checkKey, checkPrefix } from './keys.js';
import { AGENT_SCRIPT } from './ssh-agent.sh.js';
import { type ByteSource, TarFormatError, buildTar, isRegularFile, readTar, readTarHeader } from './ssh-tar.js';

export interface SshDriverOptions {
  /** Host name, address or ~/.ssh/config alias. Required; must not start with `-`. */
  host: string;
  /** Login name. Default: whatever ssh picks (~/.ssh/config `User`, else the local user). */
  user?: string;
  /** Port. Default: ssh's (~/.ssh/config `Port`, else 22). */
  port?: number;
  /** Absolute path of the store directory on the host. Created on first write. Required. */
  root: string;
  /** Private key file (`ssh -i`). Default: ssh's own choice (agent, ~/.ssh/id_*). */
  identity?: string;
  /** An ssh_config file to use instead of ~/.ssh/config (`ssh -F`). */
  configFile?: string;
  /** Extra `-o Name=value` options for ssh, e.g. `StrictHostKeyChecking=accept-new`. Default: none. */
  sshOptions?: string[];
  /** `BatchMode=yes`: never prompt for a password or passphrase. Default: true. */
  batchMode?: boolean;
  /** The ssh client binary. Default: `ssh` from PATH. */
  sshCommand?: string;
  /** Shell sessions over the connection (parallel requests). Default: 2. */
  channels?: number;
  /** Make writes durable on the host when the Store asks (`sync -f` of the store's file system). Default: true. */
  fsync?: boolean;
  /** Seconds to wait for the TCP connection (`ConnectTimeout`). Default: 15. */
  connectTimeout?: number;
  /**
   * `putIfAbsent` of a content-addressed key (`chunks/`, `deltas/`, `manifests/`) resolves `true`
   * as soon as it is queued, up to 64 MiB in flight, so batches grow past the caller's
   * concurrency; a failure is thrown by the next `flush()` or write of another key, which wait
   * for the queue. Reads see queued objects. Default: true.
   */
  writeBehind?: boolean;
}

/** Bytes that crossed the ssh sessions (requests and replies, framing included). */
export interface SshTraffic {
  sent: number;
  received: number;
}

// A batch stops growing at these sizes; one more waits for the next.
const WRITE_BATCH_BYTES = 16 * 1024 * 1024;
const WRITE_BATCH_OBJECTS = 2000;
const READ_BATCH_OBJECTS = 1000;
const HAS_BATCH_KEYS = 4000;
const DELETE_BATCH_KEYS = 1000;
// The read streams' tar writes records of this many 512-byte blocks; a batch's sentinel is one
// record. Small records keep a few reads cheap on the wire; once a pull has moved real volume,
// a stream with large records (fewer write calls on the host) takes over.
const STREAM_BLOCKING_SMALL = 2;
const STREAM_BLOCKING_LARGE = 16;
const LARGE_STREAM_AFTER = 32 * 1024 * 1024;
const STREAM_BATCHES_OUT = 4;
/** Content-addressed objects queued (not yet confirmed by the host) at most, in bytes. */
const WRITE_BEHIND_BYTES = 64 * 1024 * 1024;
// Keys whose bytes are fixed by their name (DESIGN 3): a queued create of one cannot conflict.
const CONTENT_ADDRESSED = /^(chunks|deltas|manifests)\//;

/** Reads `ssh://[user@]host[:port]/abs/path?identity=..&config=..&strict_host_key_checking=..&known_hosts=..&channels=..&fsync=..`. */
export function sshDriverOptionsFromUrl(url: URL): SshDriverOptions {
  const bad = (why: string) => new KkError('CONFIG_INVALID', `bad ssh store URL "${url.href}": ${why}`, {
    hint: 'write ssh://user@host:port/absolute/path (see README "The ssh store")',
  });
  if (url.password) throw bad('passwords are not supported; use a key (ssh-agent or ?identity=/path/key)');
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host) throw bad('no host');
  let root: string;
  try {
    root = decodeURIComponent(url.pathname);
  } catch {
    throw bad('the path is not valid percent-encoding');
  }
  const opts: SshDriverOptions = { host, root };
  if (url.username) opts.user = decodeURIComponent(url.username);
  if (url.port) opts.port = Number(url.port);
  const sshOptions: string[] = [];
  for (const [name, value] of url.searchParams) {
    switch (name) {
      case 'identity':
        opts.identity = value;
        break;
      case 'config':
        opts.configFile = value;
        break;
      case 'known_hosts':
        sshOptions.push(`UserKnownHostsFile=${value}`);
        break;
      case 'strict_host_key_checking':
        if (!['yes', 'no', 'accept-new', 'ask', 'off'].includes(value)) throw bad('strict_host_key_checking must be yes, no or accept-new');
        sshOptions.push(`StrictHostKeyChecking=${value}`);
        break;
      case 'channels': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 1 || n > 16) throw bad('channels must be 1..16');
        opts.channels = n;
        break;
      }
      case 'fsync':
        if (!/^(true|false|1|0|yes|no)$/.test(value)) throw bad('fsync must be true or false');
        opts.fsync = /^(true|1|yes)$/.test(value);
        break;
      case 'connect_timeout': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 1) throw bad('connect_timeout must be a whole number of seconds');
        opts.connectTimeout = n;
        break;
      }
      default:
        throw bad(`unknown parameter "${name}" (known: identity, config, known_hosts, strict_host_key_checking, channels, fsync, connect_timeout)`);
    }
  }
  if (sshOptions.length) opts.sshOptions = sshOptions;
  try {
    checkOptions(opts);
  } catch (err) {
    throw bad((err as Error).message);
  }
  return opts;
}

function checkOptions(opts: SshDriverOptions): void {
  if (!opts.host || opts.host.startsWith('-') || !/^[A-Za-z0-9._:%-]+$/.test(opts.host)) throw new TypeError(`unsafe ssh host "${opts.host}"`);
  if (opts.user !== undefined && (opts.user === '' || opts.user.startsWith('-') || /[\s@:/\0]/.test(opts.user))) throw new TypeError(`unsafe ssh user "${opts.user}"`);
  if (opts.port !== undefined && !(Number.isInteger(opts.port) && opts.port > 0 && opts.port < 65536)) throw new TypeError(`bad ssh port ${opts.port}`);
  if (!path.posix.isAbsolute(opts.root) || /[\0-\x1f\x7f]/.test(opts.root)) throw new TypeError(`the ssh store path must be absolute, got "${opts.root}"`);
  for (const o of opts.sshOptions ?? []) if (!/^[A-Za-z]+=\S*$/.test(o)) throw new TypeError(`bad ssh option "${o}" (want Name=value)`);
}

export function createSshDriver(opts: SshDriverOptions) {
  checkOptions(opts);
  const root = path.posix.normalize(opts.root).replace(/(.)\/+$/, '$1');
  const fsync = opts.fsync ?? true;
  const maxChannels = Math.max(1, opts.channels ?? 2);
  const capabilities: DriverCapabilities = {
    rangeReads: true,
    atomicCreate: true,
    listing: true,
    deletion: true,
    batchExists: true,
  };
  const where = `${opts.user ? `${opts.user}@` : ''}${opts.host}${opts.port ? `:${opts.port}` : ''}:${root}`;
  const traffic: SshTraffic = { sent: 0, received: 0 };
  const session = randomBytes(8).toString('hex');

  let controlDir: string | undefined;
  let opening: Promise<Channel> | undefined;
  const channels: Channel[] = [];
  let spawning = 0;
  let closed = false;
  let dirty = false;
  let batchNo = 0;
  let sessions = 0;

  function sshArgs(): string[] {
    const args = [
      '-o', `BatchMode=${opts.batchMode === false ? 'no' : 'yes'}`,
      '-o', 'ControlMaster=auto',
      '-o', `ControlPath=${path.join(controlDir!, 'cm')}`,
      '-o', 'ControlPersist=30',
      '-o', `ConnectTimeout=${opts.connectTimeout ?? 15}`,
      '-o', 'ServerAliveInterval=15',
      '-o', 'ServerAliveCountMax=4',
      '-o', 'LogLevel=ERROR',
    ];
    if (opts.configFile) args.unshift('-F', opts.configFile);
    for (const o of opts.sshOptions ?? []) args.push('-o', o);
    if (opts.identity) args.push('-i', opts.identity);
    if (opts.port) args.push('-p', String(opts.port));
    if (opts.user) args.push('-l', opts.user);
    return args;
  }

  let hostInfo: HostInfo | undefined;
  async function openChannel(clean: boolean): Promise<Channel> {
    controlDir ??= await mkdtemp(path.join(tmpdir(), 'kk-ssh-'));
    const ch = new Channel(`${session}${(sessions++).toString(36)}`, opts.sshCommand ?? 'ssh', [...sshArgs(), '--', opts.host, 'sh -s'], where, traffic, (c) => {
      const i = channels.indexOf(c);
      if (i >= 0) channels.splice(i, 1);
    });
    try {
      await ch.start();
      const info = hostInfo ?? (await ch.init(root, clean));
      if (hostInfo) await ch.init(root, false, hostInfo);
      hostInfo = info;
      if (info.tar === 'none') {
        throw new KkError('STORE_INVALID', `ssh store ${where}: tar is missing on the host`, {
          hint: 'install GNU tar or bsdtar on the host (Debian: apt-get install tar)',
        });
      }
      if (info.root === 'notdir') {
        throw new KkError('STORE_INVALID', `ssh store ${where}: ${root} exists on the host but is not a directory`, {
          hint: 'point the URL at a directory (it is created on the first push if missing)',
        });
      }
      ch.info = info;
    } catch (err) {
      await ch.kill();
      // Nothing else uses the connection: do not leave its socket directory behind (a caller
      // whose open failed may never call close()).
      if (!channels.length && !spawning) await dropMaster();
      throw err;
    }
    channels.push(ch);
    return ch;
  }

  /** Ends the ControlMaster (it outlives its last session for ControlPersist) and removes its directory. */
  async function dropMaster(): Promise<void> {
    const dir = controlDir;
    if (!dir) return;
    await new Promise<void>((resolve) => {
      const p = spawn(opts.sshCommand ?? 'ssh', [...sshArgs(), '-O', 'exit', '--', opts.host], { stdio: 'ignore' });
      p.on('error', () => resolve());
      p.on('exit', () => resolve());
    });
    controlDir = undefined;
    await rm(dir, { recursive: true, force: true });
  }

  // Sessions turned into read streams (GNU tar on the host): batches of reads cost no process.
  interface StreamSlot {
    blocking: number;
    starting?: Promise<Channel | undefined>;
    ready?: Channel | undefined;
  }
  const streams: StreamSlot[] = [{ blocking: STREAM_BLOCKING_SMALL }, { blocking: STREAM_BLOCKING_LARGE }];
  let streamedBytes = 0;
  /** The stream of `slot` if it is up; otherwise starts it (once) and answers undefined for now. */
  function streamOf(slot: StreamSlot): Channel | undefined {
    if (slot.ready && !slot.ready.gone) return slot.ready;
    if (!slot.starting || slot.ready?.gone) {
      slot.ready = undefined;
      slot.starting = startStream(slot.blocking);
      slot.starting.then((c) => (slot.ready = c)).catch(() => {});
    }
    return undefined;
  }
  function readStream(): Channel | undefined {
    if (streamedBytes > LARGE_STREAM_AFTER) {
      const large = streamOf(streams[1]!);
      if (large) return large;
    }
    return streamOf(streams[0]!);
  }
  function startStream(blocking: number): Promise<Channel | undefined> {
    return (async () => {
      await channel();
      if (hostInfo?.tar !== 'gnu' || closed) return undefined;
      const ch = new Channel(`${session}${(sessions++).toString(36)}`, opts.sshCommand ?? 'ssh', [...sshArgs(), '--', opts.host, 'sh -s'], where, traffic, () => {});
      try {
        await ch.start();
        await ch.init(root, false, hostInfo);
        await ch.openReadStream(blocking);
        if (closed) await ch.quit();
        return closed ? undefined : ch;
      } catch {
        await ch.kill();
        return undefined;
      }
    })();
  }
  const remotePath = (key: string) => `${root === '/' ? '' : root}/${key}`;

  /** A ready channel: the least busy one; another is opened in the background when all are busy. */
  async function channel(): Promise<Channel> {
    if (closed) throw new TypeError('ssh driver used after close()');
    if (!channels.length) {
      opening ??= openChannel(true).finally(() => {
        opening = undefined;
      });
      await opening;
      readStream();
      if (!channels.length) throw new KkError('BACKEND', `ssh store ${where}: the session ended as soon as it opened`, { hint: 'try `ssh` to the host by hand' });
    }
    let best = channels[0]!;
    for (const c of channels) if (c.pending < best.pending) best = c;
    if (best.pending > 0 && channels.length + spawning < maxChannels) {
      spawning++;
      openChannel(false)
        .catch(() => {})
        .finally(() => spawning--);
    }
    return best;
  }

  // ---- coalescing queues: callers that arrive while a batch is out travel in the next one ----

  interface WriteOp {
    key: string;
    data: Uint8Array;
    create: boolean;
    resolve: (created: boolean) => void;
    reject: (err: unknown) => void;
  }
  const writes: WriteOp[] = [];
  let writesOut = 0;

  function pumpWrites(): void {
    while (writes.length && writesOut < maxChannels) {
      let bytes = 0;
      let n = 0;
      while (n < writes.length && n < WRITE_BATCH_OBJECTS && (n === 0 || bytes + writes[n]!.data.length <= WRITE_BATCH_BYTES)) bytes += writes[n++]!.data.length;
      const batch = writes.splice(0, n);
      writesOut++;
      sendWrites(batch).finally(() => {
        writesOut--;
        pumpWrites();
      });
    }
  }

  async function sendWrites(batch: WriteOp[]): Promise<void> {
    // In key order (stable: writes of one key keep theirs), a directory's keys come together: the
    // host checks each new key's directory once per run of them (kk_linkdirs).
    batch.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    try {
      const id = (batchNo++).toString(36);
      const ch = await channel();
      // Each session stages in its own directory (it empties it now and then).
      const staged = (i: number) => `${TEMP_PREFIX}${ch.session}/${id}/${i}`;
      const entries = batch.flatMap((op, i) => {
        const file = { name: staged(i), data: op.data };
        return op.create ? [file, { name: op.key, link: staged(i) }] : [file];
      });
      const list = Buffer.from(batch.map((op) => `${op.create ? 'c' : 'r'}${op.key}\n`).join(''));
      const tar = buildTar(entries);
      const { results, message } = await ch.writeBatch(batch.length, list, tar, id);
      if (results.length !== batch.length) throw ch.protocolError(`write batch answered ${results.length} of ${batch.length}`);
      dirty = true;
      batch.forEach((op, i) => {
        const r = results[i];
        if (r === '1') op.resolve(true);
        else if (r === '0') op.resolve(false);
        else op.reject(opError(where, op.create ? 'putIfAbsent' : 'put', op.key, message || 'the host did not store the object'));
      });
    } catch (err) {
      for (const op of batch) op.reject(err);
    }
  }

  // Write-behind bookkeeping: queued content-addressed objects, readable until confirmed.
  const writeBehind = opts.writeBehind ?? true;
  const behind = new Map<string, Uint8Array>();
  let behindBytes = 0;
  let behindError: unknown;
  // Woken whenever a queued object settles (room for more) / when none is left (barrier).
  let roomWaiters: (() => void)[] = [];
  let idleWaiters: (() => void)[] = [];
  const wakeAll = (list: (() => void)[]) => list.forEach((w) => w());

  function queueBehind(key: string, data: Uint8Array): void {
    behind.set(key, data);
    behindBytes += data.length;
    const settle = () => {
      behind.delete(key);
      behindBytes -= data.length;
      const room = roomWaiters;
      roomWaiters = [];
      wakeAll(room);
      if (!behind.size) {
        const idle = idleWaiters;
        idleWaiters = [];
        wakeAll(idle);
      }
    };
    writes.push({
      key,
      data,
      create: true,
      resolve: settle,
      reject: (err) => {
        behindError ??= err;
        settle();
      },
    });
    pumpWrites();
  }

  /** Waits for every queued write-behind object; throws the first failure among them. */
  async function barrier(): Promise<void> {
    while (behind.size) await new Promise<void>((r) => idleWaiters.push(r));
    if (behindError !== undefined) throw behindError;
  }

  interface ReadOp {
    key: string;
    resolve: (data: Buffer | undefined) => void;
    reject: (err: unknown) => void;
  }
  const reads: ReadOp[] = [];
  let readsOut = 0;

  function pumpReads(): void {
    while (reads.length && readsOut < Math.max(maxChannels, STREAM_BATCHES_OUT)) {
      const batch = reads.splice(0, READ_BATCH_OBJECTS);
      readsOut++;
      sendReads(batch).finally(() => {
        readsOut--;
        pumpReads();
      });
    }
  }

  async function sendReads(batch: ReadOp[]): Promise<void> {
    try {
      const keys = [...new Set(batch.map((op) => op.key))];
      const s = readStream();
      if (s) {
        const byPath = await s.streamFetch(keys.map(remotePath));
        for (const data of byPath.values()) streamedBytes += data.length;
        const missing = keys.filter((k) => !byPath.has(remotePath(k)));
        // tar skips what it cannot read: tell a missing object from an unreadable one.
        // Those present now (unreadable, or created meanwhile) are read once more the slow way.
        const present = missing.length ? await call((ch) => ch.has(missing)) : [];
        const again = missing.filter((_, i) => present[i]);
        const retry = again.length ? await call((ch) => ch.readBatch(again)) : undefined;
        for (const op of batch) {
          const data = byPath.get(remotePath(op.key)) ?? retry?.files.get(op.key);
          if (data) op.resolve(data);
          else if (retry && retry.rc !== 0 && again.includes(op.key) && /Permission denied|Input\/output error/i.test(retry.message)) op.reject(opError(where, 'get', op.key, retry.message));
          else op.resolve(undefined);
        }
        return;
      }
      const ch = await channel();
      const { files, rc, message } = await ch.readBatch(keys);
      for (const op of batch) {
        const data = files.get(op.key);
        if (data) op.resolve(data);
        else if (rc !== 0 && /Permission denied|Input\/output error/i.test(message)) op.reject(opError(where, 'get', op.key, message));
        else op.resolve(undefined);
      }
    } catch (err) {
      for (const op of batch) op.reject(err);
    }
  }

  interface DeleteOp {
    key: string;
    resolve: () => void;
    reject: (err: unknown) => void;
  }
  const deletes: DeleteOp[] = [];
  let deletesOut = 0;

  function pumpDeletes(): void {
    while (deletes.length && deletesOut < 1) {
      const batch = deletes.splice(0, DELETE_BATCH_KEYS);
      deletesOut++;
      (async () => {
        try {
          const ch = await channel();
          const err = await ch.deleteBatch([...new Set(batch.map((op) => op.key))]);
          for (const op of batch) err ? op.reject(opError(where, 'delete', op.key, err)) : op.resolve();
        } catch (err) {
          for (const op of batch) op.reject(err);
        }
      })().finally(() => {
        deletesOut--;
        pumpDeletes();
      });
    }
  }

  async function call<T>(fn: (ch: Channel) => Promise<T>): Promise<T> {
    return fn(await channel());
  }

  return {
    name: 'ssh',
    capabilities,
    /** Bytes sent and received over the ssh sessions so far (bench and `--verbose` figures). */
    traffic,

    async get(key: string, range?: ByteRange): Promise<Buffer | undefined> {
      checkSshKey(key);
      if (range && !(Number.isSafeInteger(range.start) && Number.isSafeInteger(range.end) && range.start >= 0 && range.end >= range.start)) {
        throw new TypeError(`bad byte range ${JSON.stringify(range)}`);
      }
      const queued = behind.get(key);
      if (queued) {
        const b = Buffer.from(queued);
        return range ? b.subarray(range.start, range.end + 1) : b;
      }
      if (range) {
        return call((ch) => ch.readRange(key, range.start, range.end - range.start + 1));
      }
      return new Promise((resolve, reject) => {
        reads.push({ key, resolve, reject });
        pumpReads();
      });
    },

    async stat(key: string): Promise<ObjectInfo | undefined> {
      checkSshKey(key);
      const queued = behind.get(key);
      if (queued) return { key, size: queued.length, mtime: Date.now() };
      const r = await call((ch) => ch.stat(key));
      return r && { key, size: r.size, mtime: r.mtime };
    },

    async hasMany(keys: readonly string[]): Promise<boolean[]> {
      keys.forEach(checkSshKey);
      const out: boolean[] = [];
      for (let i = 0; i < keys.length; i += HAS_BATCH_KEYS) {
        const part = keys.slice(i, i + HAS_BATCH_KEYS);
        out.push(...(await call((ch) => ch.has(part))));
      }
      return behind.size ? out.map((present, i) => present || behind.has(keys[i]!)) : out;
    },

    async *list(prefix: string): AsyncIterable<ObjectInfo> {
      checkSshPrefix(prefix);
      const dirKey = prefix.slice(0, prefix.lastIndexOf('/') + 1);
      await barrier();
      for (const info of await call((ch) => ch.list(dirKey))) {
        const key = dirKey + info.rel;
        if (key.startsWith(prefix)) yield { key, size: info.size, mtime: info.mtime };
      }
    },

    async listChildren(prefix: string): Promise<string[]> {
      if (prefix !== '' && !prefix.endsWith('/')) throw new TypeError(`listChildren prefix must end in "/", got "${prefix}"`);
      checkSshPrefix(prefix);
      const names = await call((ch) => ch.children(prefix));
      return [...new Set(names.filter((n) => !n.startsWith(TEMP_PREFIX)))].sort();
    },

    async put(key: string, data: Uint8Array): Promise<void> {
      checkSshKey(key);
      // Objects queued behind are written before anything that could name them.
      await barrier();
      await new Promise<boolean>((resolve, reject) => {
        writes.push({ key, data, create: false, resolve, reject });
        pumpWrites();
      });
    },

    async putIfAbsent(key: string, data: Uint8Array): Promise<boolean> {
      checkSshKey(key);
      if (behind.has(key)) return false;
      if (writeBehind && CONTENT_ADDRESSED.test(key)) {
        if (behindError !== undefined) throw behindError;
        while (behindBytes > 0 && behindBytes + data.length > WRITE_BEHIND_BYTES) await new Promise<void>((r) => roomWaiters.push(r));
        if (behind.has(key)) return false;
        queueBehind(key, data);
        return true;
      }
      await barrier();
      return new Promise((resolve, reject) => {
        writes.push({ key, data, create: true, resolve, reject });
        pumpWrites();
      });
    },

    async delete(key: string): Promise<void> {
      checkSshKey(key);
      return new Promise((resolve, reject) => {
        deletes.push({ key, resolve, reject });
        pumpDeletes();
      });
    },

    async flush(): Promise<void> {
      await barrier();
      if (!fsync || !dirty) return;
      dirty = false;
      await call((ch) => ch.flush());
    },

    async close(): Promise<void> {
      if (closed) return;
      await barrier().catch(() => {});
      closed = true;
      await opening?.catch(() => {});
      while (spawning) await new Promise((r) => setTimeout(r, 10));
      const open = await Promise.all(streams.map((slot) => slot.starting?.catch(() => undefined)));
      await Promise.all([...channels.slice(), ...open.filter((c) => c !== undefined)].map((c) => c.quit()));
      await dropMaster();
    },
  } satisfies PruneDriver & { traffic: SshTraffic };
}

/** The shared key rules, plus no control characters: keys travel one per line. */
function checkSshKey(key: string): void {
  checkKey(key);
  if (/[\0-\x1f\x7f]/.test(key)) throw new TypeError(`unsafe store key ${JSON.stringify(key)}: control characters are not allowed`);
}

function checkSshPrefix(prefix: string): void {
  checkPrefix(prefix);
  if (/[\0-\x1f\x7f]/.test(prefix)) throw new TypeError(`unsafe store prefix ${JSON.stringify(prefix)}: control characters are not allowed`);
}

interface HostInfo {
  tar: string;
  find: string;
  stat: string;
  root: string;
}

/** An error the host reported for one operation, coded by what the message says. */
function opError(where: string, op: string, key: string, message: string): KkError {
  const msg = message.trim().replace(/\s+/g, ' ');
  let code: KkErrorCode = 'BACKEND';
  let hint = 'see the message; the operation can be retried';
  // GNU tar reports a write cut short by a full disk as "Wrote only N of M bytes".
  if (/No space left on device|Disk quota exceeded|File too large|Wrote only \d+ of \d+ bytes/i.test(msg)) {
    code = 'DISK_FULL';
    hint = 'free space on the file system of the store directory on the host, then retry';
  } else if (/Permission denied|Read-only file system|Operation not permitted/i.test(msg)) {
    code = 'FORBIDDEN';
    hint = 'the ssh user needs write access to the store directory on the host';
  }
  return new KkError(code, `ssh store ${where}: ${op} "${key}" failed: ${msg}`, { hint, details: { key } });
}

// What every session is sent first: the script without its comments and indentation.
const SCRIPT_BYTES = Buffer.from(
  AGENT_SCRIPT.split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .join('\n') + '\n',
);

/** One `sh -s` session on the host, answering requests in order. */
class Channel {
  info: HostInfo | undefined;
  /** Requests sent and not yet answered. */
  pending = 0;
  private child: ChildProcessWithoutNullStreams | undefined;
  private stderr = '';
  private spawnError: NodeJS.ErrnoException | undefined;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private wake: (() => void) | undefined;
  private ended: Error | undefined;
  private replies: Promise<unknown> = Promise.resolve();
  /** Read-stream mode: batches waiting for their sentinel, oldest first. */
  private streamBatches: { files: Map<string, Buffer>; resolve: (f: Map<string, Buffer>) => void; reject: (e: unknown) => void }[] = [];
  private sentinel: string | undefined;
  private quitting = false;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    /** Names this session's staging directory, `.tmp-<session>`: unique per session. */
    readonly session: string,
    private readonly command: string,
    private readonly args: string[],
    private readonly where: string,
    private readonly traffic: SshTraffic,
    private readonly onGone: (c: Channel) => void,
  ) {}

  async start(): Promise<void> {
    const child = spawn(this.command, this.args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    child.stdout.on('data', (b: Buffer) => {
      this.traffic.received += b.length;
      this.chunks.push(b);
      this.buffered += b.length;
      this.wake?.();
    });
    child.stderr.on('data', (b: Buffer) => {
      if (this.stderr.length < 8192) this.stderr += b.toString();
    });
    child.stdin.on('error', () => {});
    const gone = (why: Error) => {
      if (this.ended) return;
      this.ended = why;
      this.onGone(this);
      this.wake?.();
    };
    child.on('error', (e: NodeJS.ErrnoException) => {
      this.spawnError = e;
      gone(this.failure(null, null));
    });
    child.on('close', (code, signal) => gone(this.failure(code, signal)));
    this.send([SCRIPT_BYTES]);
    const hello = await this.reply(() => this.line());
    if (hello !== 'kk-ssh 1') throw this.protocolError(`unexpected greeting ${JSON.stringify(hello.slice(0, 80))}`);
  }

  /** The KkError for a session that ended: classified from what ssh printed. */
  private failure(code: number | null, signal: string | null): KkError {
    const text = this.stderr.trim().split('\n').filter(Boolean).slice(-3).join(' / ') || `ssh exited with ${signal ?? `code ${code}`}`;
    const where = this.where;
    if (/Permission denied \(|Too many authentication failures|no mutual signature|Authentication failed/i.test(text)) {
      return new KkError('AUTH', `ssh store ${where}: login refused: ${text}`, {
        hint: 'authorize your key on the host (ssh-copy-id), load it into ssh-agent, or name it with ?identity=/path/key; BatchMode is on, so ssh never asks for a password',
      });
    }
    if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No .* host key is known/i.test(text)) {
      return new KkError('AUTH', `ssh store ${where}: the host key is not trusted: ${text}`, {
        hint: 'connect once with `ssh` to check and accept the host key, or set StrictHostKeyChecking accept-new for it in ~/.ssh/config',
      });
    }
    if (/: not found|command not found|No such file or directory/i.test(text) && code === 127) {
      return new KkError('STORE_INVALID', `ssh store ${where}: the host has no POSIX sh: ${text}`, { hint: 'the host needs /bin/sh and tar' });
    }
    if (this.spawnError?.code === 'ENOENT') {
      return new KkError('BACKEND', `ssh store ${where}: the ssh client "${this.command}" is not installed`, { hint: 'install OpenSSH (Debian: apt-get install openssh-client)' });
    }
    return new KkError('BACKEND', `ssh store ${where}: connection failed: ${text}`, {
      hint: 'check the host name and port, that sshd runs there and that the network allows it (try `ssh` by hand)',
    });
  }

  /** The session has ended (its process exited). */
  get gone(): boolean {
    return this.ended !== undefined;
  }

  /** Turn this session into a read stream (see kk_streamreads in ssh-agent.sh.ts). */
  async openReadStream(blocking: number): Promise<void> {
    const sentinel = await this.request([Buffer.from(`sr ${blocking * 512} ${blocking}\n`)], () => this.okLine('read stream'));
    if (!sentinel.startsWith('/')) throw this.protocolError('read stream without a sentinel path');
    this.sentinel = sentinel;
    void this.streamLoop(sentinel);
  }

  /** Files (by absolute path) of `paths` that exist; the others are simply absent from the map. */
  streamFetch(paths: readonly string[]): Promise<Map<string, Buffer>> {
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      if (this.streamBatches.length === 0) this.hold(true);
      this.streamBatches.push({ files: new Map(), resolve, reject });
      this.send([Buffer.from(`${paths.join('\n')}\n${this.sentinel}\n`)]);
    });
  }

  private async streamLoop(sentinel: string): Promise<void> {
    try {
      for (;;) {
        const h = await readTarHeader(this.source);
        if (!h) {
          if (this.quitting) return;
          throw this.protocolError('the read stream ended');
        }
        if (h.name === sentinel) {
          const done = this.streamBatches.shift();
          if (!done) throw this.protocolError('read stream sentinel without a batch');
          if (this.streamBatches.length === 0) this.hold(false);
          done.resolve(done.files);
          // The rest of the sentinel comes out with the next batch.
          await this.bytes(h.dataLength);
          continue;
        }
        const body = h.dataLength ? await this.bytes(h.dataLength) : Buffer.alloc(0);
        if (isRegularFile(h.type)) this.streamBatches[0]?.files.set(h.name, body.subarray(0, h.size));
      }
    } catch (err) {
      if (this.quitting) return;
      const e = err instanceof TarFormatError ? this.protocolError(err.message) : err;
      for (const b of this.streamBatches.splice(0)) b.reject(e);
      this.hold(false);
      void this.kill();
    }
  }

  protocolError(why: string): KkError {
    void this.kill();
    return new KkError('BACKEND', `ssh store ${this.where}: protocol error: ${why}`, {
      hint: `the host's sh or tar behaves unexpectedly; report this with the output of \`ssh HOST 'tar --version; ls -l /bin/sh'\``,
    });
  }

  /** An idle session does not keep the process alive (a caller that forgot close() still exits). */
  private hold(busy: boolean): void {
    const c = this.child;
    if (!c) return;
    for (const h of [c, c.stdin, c.stdout, c.stderr] as { ref(): void; unref(): void }[]) busy ? h.ref() : h.unref();
  }

  /** Queue `parts` on stdin in order. */
  private send(parts: readonly Uint8Array[]): void {
    const stdin = this.child!.stdin;
    this.writing = this.writing.then(async () => {
      for (const p of parts) {
        if (this.ended) return;
        this.traffic.sent += p.length;
        if (!stdin.write(p)) {
          await new Promise<void>((r) => {
            const done = () => {
              stdin.off('drain', done).off('close', done);
              r();
            };
            stdin.on('drain', done).on('close', done);
          });
        }
      }
    });
  }

  /** Run `read` once every earlier reply has been consumed. */
  private reply<T>(read: () => Promise<T>): Promise<T> {
    if (this.pending++ === 0) this.hold(true);
    const p = this.replies.then(read).finally(() => {
      if (--this.pending === 0) this.hold(false);
    });
    this.replies = p.catch(() => {});
    return p;
  }

  private request<T>(parts: readonly Uint8Array[], read: () => Promise<T>): Promise<T> {
    if (this.ended) return Promise.reject(this.ended);
    this.send(parts);
    return this.reply(read).catch((e: unknown) => {
      if (e instanceof TarFormatError) throw this.protocolError(e.message);
      throw e;
    });
  }

  // ---- the byte stream of replies ----

  private async fill(n: number): Promise<void> {
    while (this.buffered < n) {
      if (this.ended) throw this.ended;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
    }
  }

  private take(n: number): Buffer {
    if (this.chunks[0]!.length >= n) {
      const head = this.chunks[0]!;
      const out = head.subarray(0, n);
      if (head.length === n) this.chunks.shift();
      else this.chunks[0] = head.subarray(n);
      this.buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const head = this.chunks[0]!;
      const k = Math.min(head.length, n - filled);
      head.copy(out, filled, 0, k);
      filled += k;
      if (k === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(k);
    }
    this.buffered -= n;
    return out;
  }

  private async bytes(n: number): Promise<Buffer> {
    await this.fill(n);
    return this.take(n);
  }

  private readonly source: ByteSource = { read: (n) => this.bytes(n) };

  private async line(): Promise<string> {
    for (let scanned = 0; ; ) {
      for (let i = 0, seen = 0; i < this.chunks.length; i++) {
        const c = this.chunks[i]!;
        if (seen + c.length > scanned) {
          const at = c.indexOf(0x0a, Math.max(0, scanned - seen));
          if (at >= 0) {
            const text = this.take(seen + at + 1).toString('utf8');
            return text.slice(0, -1);
          }
        }
        seen += c.length;
      }
      scanned = this.buffered;
      if (scanned > 1 << 20) throw this.protocolError('reply line longer than 1 MiB');
      await this.fill(scanned + 1);
    }
  }

  /** Skip the zero padding tar writes after its end-of-archive block. */
  private async skipZeros(): Promise<void> {
    for (;;) {
      await this.fill(1);
      const head = this.chunks[0]!;
      let i = 0;
      while (i < head.length && head[i] === 0) i++;
      if (i) this.take(i);
      if (i < head.length) return;
    }
  }

  private async okLine(what: string): Promise<string> {
    const l = await this.line();
    if (l === 'ok' || l.startsWith('ok ')) return l.slice(3);
    if (l.startsWith('err ')) throw new KkError('BACKEND', `ssh store ${this.where}: ${what} failed: ${l.slice(4)}`);
    throw this.protocolError(`unexpected reply ${JSON.stringify(l.slice(0, 80))} to ${what}`);
  }

  // ---- requests ----

  /** Tell the session its store; `known` (what an earlier session found) skips the probes. */
  async init(root: string, clean: boolean, known?: HostInfo): Promise<HostInfo> {
    const probe = known ? ` lite ${known.tar} ${known.find} ${known.stat}` : clean ? ' clean' : '';
    const reply = await this.request([Buffer.from(`in ${this.session}${probe}\n${root}\n`)], () => this.okLine('init'));
    const info: Record<string, string> = {};
    for (const kv of reply.split(' ')) {
      const [k, v] = kv.split('=');
      if (k && v) info[k] = v;
    }
    return { tar: info.tar ?? 'none', find: info.find ?? 'posix', stat: info.stat ?? 'none', root: info.root ?? 'none' };
  }

  async has(keys: readonly string[]): Promise<boolean[]> {
    if (!keys.length) return [];
    const list = Buffer.from(keys.join('\n') + '\n');
    const bits = await this.request([Buffer.from(`hs ${keys.length} ${list.length}\n`), list], () => this.okLine('hasMany'));
    if (bits.length !== keys.length) throw this.protocolError(`hasMany answered ${bits.length} of ${keys.length}`);
    return [...bits].map((b) => b === '1');
  }

  async stat(key: string): Promise<{ size: number; mtime: number } | undefined> {
    return this.request([Buffer.from(`st\n${key}\n`)], async () => {
      const l = await this.line();
      if (l === 'none') return undefined;
      const m = /^ok (\d+) (\d+)/.exec(l);
      if (!m) throw this.protocolError(`unexpected stat reply ${JSON.stringify(l.slice(0, 80))}`);
      return { size: Number(m[1]), mtime: Number(m[2]) * 1000 };
    });
  }

  /** The tar reply of rb/rr: files by name, tar's exit status and its message. */
  private async tarReply(): Promise<{ files: Map<string, Buffer>; rc: number; message: string }> {
    const files = new Map<string, Buffer>();
    const l = await this.line();
    if (l === 'none') return { files, rc: 0, message: '' };
    if (l !== 'tar') throw this.protocolError(`unexpected read reply ${JSON.stringify(l.slice(0, 80))}`);
    await readTar(this.source, (e) => files.set(e.name, e.data));
    await this.skipZeros();
    const end = /^end (\d+) ?(.*)$/.exec(await this.line());
    if (!end) throw this.protocolError('read reply without its end line');
    return { files, rc: Number(end[1]), message: end[2]! };
  }

  readBatch(keys: readonly string[]): Promise<{ files: Map<string, Buffer>; rc: number; message: string }> {
    const list = Buffer.from(keys.join('\n') + '\n');
    return this.request([Buffer.from(`rb ${keys.length} ${list.length}\n`), list], () => this.tarReply());
  }

  async readRange(key: string, start: number, length: number): Promise<Buffer | undefined> {
    const r = await this.request([Buffer.from(`rr ${start} ${length}\n${key}\n`)], () => this.tarReply());
    const [data] = r.files.values();
    if (data) return data;
    if (r.rc !== 0 && /Permission denied|Input\/output error/i.test(r.message)) throw opError(this.where, 'get', key, r.message);
    return undefined;
  }

  writeBatch(count: number, list: Buffer, tar: { parts: Uint8Array[]; length: number }, id: string): Promise<{ results: string; message: string }> {
    return this.request([Buffer.from(`wb ${count} ${list.length} ${tar.length} ${id}\n`), list, ...tar.parts], async () => {
      const results = await this.okLine('write');
      const msg = await this.line();
      if (!msg.startsWith('msg')) throw this.protocolError('write reply without its msg line');
      return { results, message: msg.slice(4).trim() };
    });
  }

  /** Deletes `keys`; resolves an error message, or undefined when all went. */
  async deleteBatch(keys: readonly string[]): Promise<string | undefined> {
    const list = Buffer.from(keys.join('\n') + '\n');
    return this.request([Buffer.from(`dm ${keys.length} ${list.length}\n`), list], async () => {
      const l = await this.line();
      if (l === 'ok') return undefined;
      if (l.startsWith('err ')) return l.slice(4);
      throw this.protocolError(`unexpected delete reply ${JSON.stringify(l.slice(0, 80))}`);
    });
  }

  /** Every object under `dirKey`, read whole before it is returned: the session is never held by a slow consumer. */
  list(dirKey: string): Promise<{ rel: string; size: number; mtime: number }[]> {
    return this.request([Buffer.from(`ls\n${dirKey}\n`)], async () => {
      const out: { rel: string; size: number; mtime: number }[] = [];
      for (;;) {
        const l = await this.line();
        const end = /^end (\d+)$/.exec(l);
        if (end) {
          if (end[1] !== '0') throw new KkError('BACKEND', `ssh store ${this.where}: listing "${dirKey}" failed (find exited with ${end[1]})`);
          return out;
        }
        const m = /^(\d+) (\d+)(?:\.(\d+))? (.+)$/.exec(l);
        if (!m) throw this.protocolError(`unexpected list line ${JSON.stringify(l.slice(0, 80))}`);
        const mtime = Number(m[2]) * 1000 + Math.floor(Number(`0.${m[3] ?? '0'}`) * 1000);
        out.push({ rel: m[4]!.replace(/^(\.\/)+/, ''), size: Number(m[1]), mtime });
      }
    });
  }

  async children(prefix: string): Promise<string[]> {
    return this.request([Buffer.from(`ch\n${prefix}\n`)], async () => {
      const names: string[] = [];
      for (;;) {
        const l = await this.line();
        if (l === 'end') return names;
        if (!l.startsWith('n ')) throw this.protocolError(`unexpected children line ${JSON.stringify(l.slice(0, 80))}`);
        names.push(l.slice(2));
      }
    });
  }

  async flush(): Promise<void> {
    await this.request([Buffer.from('fl\n')], () => this.okLine('flush'));
  }

  /** Ask the session to clean up and exit; kill it if it does not within 5 s. */
  async quit(): Promise<void> {
    if (!this.child || this.ended) return;
    this.quitting = true;
    const exited = new Promise<void>((r) => this.child!.once('close', () => r()));
    // A read stream ends with its stdin; a command session is told to clean up first.
    if (this.sentinel === undefined) this.send([Buffer.from('q\n')]);
    await this.writing;
    this.child.stdin.end();
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  async kill(): Promise<void> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child!.once('close', () => r()));
    this.child.kill('SIGKILL');
    await exited;
  }
}
