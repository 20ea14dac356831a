// `kk node install ssh://user@host[:port]` (seed 000 "auto install"): over ssh, checks that the
// host has Node.js >= 20, copies this kk installation there (the kk package and the closure of
// its dependencies, streamed as a tar.gz into <prefix>/releases/<id>), writes the agent's
// configuration (agent.env, 0600) and a systemd unit made from packaging/kk-agent.service, starts
// the agent (systemd where it runs; else with nohup when asked, or prints the exact command), and
// waits until the agent has enrolled (and, with an admin token, until the node is ONLINE).
import { spawn } from 'node:child_process';
import { createReadStream, existsSync } from 'node:fs';
import { lstat, readFile, readdir, realpath, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { createGzip } from 'node:zlib';
import { Args, Flags } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkError } from '@kk/core';
import { KkCommand, type Outcome } from '../../base.js';
import { serverOf } from '../token/list.js';

const SAFE = /^[A-Za-z0-9_.,=:/@+%-]*$/;
const MIN_NODE = 20;

interface Dest {
  user: string | undefined;
  host: string;
  port: number;
}

export interface InstallResult {
  host: string;
  prefix: string;
  release: string;
  node_version: string;
  files: number;
  bytes: number;
  started: 'systemd' | 'systemd-user' | 'nohup' | 'none';
  start_command: string;
  node: string | null;
  name: string;
  status: string | null;
}

function parseDest(url: string): Dest {
  const m = /^(?:ssh:\/\/)?(?:([^@\s:/]+)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?\/?$/.exec(url);
  const port = m?.[3] ? Number(m[3]) : 22;
  if (!m || !(port >= 1 && port <= 65535)) throw new KkError('CONFIG_INVALID', `${JSON.stringify(url)} is not ssh://user@host[:port]`, { hint: 'for example kk node install ssh://deploy@web-1.internal' });
  return { user: m[1], host: m[2]!.replace(/^\[|\]$/g, ''), port };
}

/** A word for sh, single-quoted when it needs to be. */
function sq(s: string): string {
  return /^[A-Za-z0-9_./=:@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function safe(v: string, what: string): string {
  if (!SAFE.test(v)) throw new KkError('CONFIG_INVALID', `${what} ${JSON.stringify(v)} has characters kk does not write into the agent's environment file`, { hint: 'use letters, digits and _ . , = : / @ + % -' });
  return v;
}

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Run `ssh <opts> dest <command>`, optionally feeding stdin from a stream; never rejects for a non-zero exit. */
function ssh(opts: string[], dest: string, command: string, input?: string | Readable): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', [...opts, dest, command], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout = (stdout + d).slice(-65536)));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-65536)));
    child.once('error', (err) => reject(new KkError('BACKEND', `cannot run ssh: ${err.message}`, { hint: 'install the OpenSSH client' })));
    child.once('close', (status) => resolve({ status, stdout, stderr }));
    child.stdin.on('error', () => {}); // a failed ssh closes its stdin; the exit status says why
    if (input === undefined) child.stdin.end();
    else if (typeof input === 'string') child.stdin.end(input);
    else pipeline(input, createGzip({ level: 6 }), child.stdin).catch(() => {});
  });
}

function sshFailure(r: Ran, where: string, doing: string): KkError {
  const tail = r.stderr.split(/\r?\n/).map((l) => l.trim()).filter(Boolean).slice(-3).join(' | ');
  if (/Permission denied \(/.test(r.stderr)) return new KkError('AUTH', `ssh login to ${where} was refused: ${tail}`, { hint: 'pass --identity KEY with a key the host accepts (BatchMode: no passwords)' });
  if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/.test(r.stderr)) return new KkError('AUTH', `the host key of ${where} is not trusted: ${tail}`, { hint: 'check the key and add it to known_hosts (ssh-keyscan), or pass -o StrictHostKeyChecking=accept-new' });
  if (r.status === 255) return new KkError('BACKEND', `cannot reach ${where} over ssh: ${tail || 'ssh exited with 255'}`, { hint: 'check the host, the port and that sshd runs there' });
  return new KkError('BACKEND', `${doing} on ${where} failed (exit ${r.status}): ${tail || r.stdout.trim().slice(-300)}`);
}

/** `key value` lines the remote scripts print as `kk-install: key value`. */
function said(out: string): Record<string, string> {
  const o: Record<string, string> = {};
  for (const l of out.split('\n')) {
    const m = /^kk-install: (\S+) ?(.*)$/.exec(l.trim());
    if (m) o[m[1]!] = m[2] || 'yes';
  }
  return o;
}

// ---------------------------------------------------------------- the bundle: this kk and its dependencies

/** The kk package's directory (the one holding bin/run.js). */
async function kkRoot(): Promise<string> {
  for (let d = dirname(fileURLToPath(import.meta.url)), i = 0; i < 8; d = dirname(d), i++) {
    const pj = await readFile(join(d, 'package.json'), 'utf8').then((s) => JSON.parse(s) as { name?: string }, () => undefined);
    if (pj?.name === 'kk') return d;
  }
  throw new KkError('CONFIG_MISSING', 'cannot find the kk package this command runs from', { hint: 'run kk node install from an installed kk' });
}

async function findDep(from: string, name: string): Promise<string | undefined> {
  for (let d = from; ; d = dirname(d)) {
    const p = join(d, 'node_modules', name);
    if (existsSync(join(p, 'package.json'))) return realpath(p);
    if (dirname(d) === d) return undefined;
  }
}

interface Pkg {
  dir: string;
  /** Where it goes in the release, e.g. node_modules/@kk/core. */
  at: string;
  files?: string[];
  native: boolean;
}

/** kk and every package it needs, placed as npm would (flat, nested only on a version clash). */
async function closure(root: string): Promise<Pkg[]> {
  const out: Pkg[] = [];
  const flat = new Map<string, string>(); // name -> realpath placed at node_modules/<name>
  const queue: { dir: string; name: string; parentAt: string | undefined }[] = [{ dir: root, name: 'kk', parentAt: undefined }];
  const placed = new Set<string>();
  for (let i = 0; i < queue.length && i < 5000; i++) {
    const { dir, name, parentAt } = queue[i]!;
    let at: string;
    const taken = flat.get(name);
    if (taken === undefined) {
      flat.set(name, dir);
      at = `node_modules/${name}`;
    } else if (taken === dir) at = `node_modules/${name}`;
    else at = `${parentAt}/node_modules/${name}`;
    if (placed.has(`${dir}|${at}`)) continue;
    placed.add(`${dir}|${at}`);
    const pj = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string>; files?: string[] };
    // Our own workspaces ship what they publish; installed packages are already pruned by npm.
    const workspace = !dir.split('/').includes('node_modules');
    out.push({ dir, at, native: existsSync(join(dir, 'binding.gyp')), ...(workspace && pj.files ? { files: pj.files } : {}) });
    for (const dep of Object.keys({ ...pj.dependencies, ...pj.optionalDependencies })) {
      const d = await findDep(dir, dep);
      if (!d) {
        if (pj.optionalDependencies?.[dep]) continue;
        throw new KkError('CONFIG_MISSING', `${name} needs ${dep}, which is not installed next to it`, { hint: 'run npm install where kk is installed' });
      }
      queue.push({ dir: d, name: dep, parentAt: at });
    }
  }
  return out;
}

/** Files of one package: no nested node_modules, no sources or build leftovers of native addons, no maps or docs. */
async function* packageFiles(p: Pkg): AsyncGenerator<{ abs: string; rel: string }> {
  const skip = (rel: string, isDir: boolean) => {
    if (rel === 'node_modules' || rel.endsWith('/node_modules')) return true;
    if (p.native) {
      // A native addon needs its compiled .node files, not its sources or build tree.
      if (isDir && (rel === 'deps' || rel === 'src')) return true;
      if (isDir && (rel === 'build' || rel === 'build/Release')) return false;
      if (rel.startsWith('build/')) return isDir || !/^build\/Release\/[^/]+\.node$/.test(rel);
    }
    return !isDir && /\.(map|md|markdown)$|\.d\.[cm]?ts$/i.test(rel) && !/^(readme|license|licence)/i.test(rel.split('/').pop()!);
  };
  const roots = p.files ? ['package.json', ...p.files, ...(['LICENSE', 'README.md'].filter((f) => existsSync(join(p.dir, f))))] : [''];
  const seen = new Set<string>();
  async function* walk(rel: string): AsyncGenerator<{ abs: string; rel: string }> {
    const abs = join(p.dir, rel);
    const st = await stat(abs).catch(() => undefined);
    if (!st) return;
    if (st.isDirectory()) {
      if (rel && skip(rel, true)) return;
      for (const e of (await readdir(abs)).sort()) yield* walk(rel ? `${rel}/${e}` : e);
    } else if (st.isFile() && !skip(rel, false) && !seen.has(rel)) {
      seen.add(rel);
      yield { abs, rel };
    }
  }
  for (const r of roots) yield* walk(r.replace(/^\.\/|\/$/g, ''));
}

// ---------------------------------------------------------------- a streaming tar writer (ustar + pax for long names)

function tarHeader(name: string, size: number, mode: number, mtime: number, type: '0' | '5' | 'x'): Buffer {
  const h = Buffer.alloc(512);
  let prefix = '';
  let base = name;
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 155);
    if (cut > 0 && Buffer.byteLength(name.slice(cut + 1)) <= 100 && Buffer.byteLength(name.slice(0, cut)) <= 155) {
      prefix = name.slice(0, cut);
      base = name.slice(cut + 1);
    } else base = name.slice(0, 100);
  }
  const put = (s: string, off: number, len: number) => h.write(s, off, len, 'utf8');
  const oct = (n: number, off: number, len: number) => put(`${n.toString(8).padStart(len - 1, '0')}\0`, off, len);
  put(base, 0, 100);
  oct(mode & 0o7777, 100, 8);
  oct(0, 108, 8);
  oct(0, 116, 8);
  oct(size, 124, 12);
  oct(Math.floor(mtime / 1000), 136, 12);
  h.fill(' ', 148, 156);
  put(type, 156, 1);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  put(prefix, 345, 155);
  let sum = 0;
  for (const b of h) sum += b;
  put(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return h;
}

const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);

function* entryHeaders(name: string, size: number, mode: number, mtime: number, type: '0' | '5'): Generator<Buffer> {
  const fits = Buffer.byteLength(name) <= 100 || (() => {
    const cut = name.lastIndexOf('/', 155);
    return cut > 0 && Buffer.byteLength(name.slice(cut + 1)) <= 100;
  })();
  if (!fits) {
    const rec = (len: number) => `${len} path=${name}\n`;
    let len = Buffer.byteLength(rec(0));
    while (Buffer.byteLength(rec(len)) !== len) len = Buffer.byteLength(rec(len));
    const body = Buffer.from(rec(len));
    yield tarHeader('././@PaxHeader', body.length, 0o644, mtime, 'x');
    yield body;
    yield pad(body.length);
  }
  yield tarHeader(name, size, mode, mtime, type);
}

/** The release as a tar stream: every package's files under `prefix`, plus extra small files. */
async function* tarStream(pkgs: Pkg[], prefix: string, extra: { path: string; body: string; mode: number }[], count: { files: number; bytes: number }): AsyncGenerator<Buffer> {
  const now = Date.now();
  for (const p of pkgs) {
    for await (const f of packageFiles(p)) {
      const st = await lstat(f.abs);
      const name = `${prefix}/${p.at}/${f.rel}`;
      yield* entryHeaders(name, st.size, st.mode & 0o111 ? 0o755 : 0o644, st.mtimeMs, '0');
      let n = 0;
      for await (const chunk of createReadStream(f.abs)) {
        n += (chunk as Buffer).length;
        if (n > st.size) throw new KkError('BACKEND', `${f.abs} grew while kk was copying it; run kk node install again`);
        yield chunk as Buffer;
      }
      if (n !== st.size) throw new KkError('BACKEND', `${f.abs} changed while kk was copying it; run kk node install again`);
      yield pad(n);
      count.files++;
      count.bytes += n;
    }
  }
  for (const e of extra) {
    const body = Buffer.from(e.body);
    yield* entryHeaders(e.path, body.length, e.mode, now, '0');
    yield body;
    yield pad(body.length);
  }
  yield Buffer.alloc(1024);
}

// ---------------------------------------------------------------- the unit file

async function unitTemplate(root: string, given: string | undefined): Promise<string> {
  const candidates = given ? [given] : [join(root, 'packaging', 'kk-agent.service'), join(root, '..', '..', 'packaging', 'kk-agent.service')];
  for (const c of candidates) {
    const t = await readFile(c, 'utf8').catch(() => undefined);
    if (t !== undefined) return t;
  }
  throw new KkError('CONFIG_MISSING', `no systemd unit template found (looked for ${candidates.join(', ')})`, { hint: 'pass --unit-template packaging/kk-agent.service from the kk repository' });
}

/** packaging/kk-agent.service with this installation's paths (and, for a user unit, no system-only settings). */
export function agentUnit(template: string, o: { prefix: string; user: boolean; date: string }): string {
  const lines = template.split('\n').filter((l) => !/^(StateDirectory|StateDirectoryMode)=/.test(l));
  const out = lines.map((l) => {
    if (l.startsWith('EnvironmentFile=')) return `EnvironmentFile=${o.prefix}/agent.env`;
    if (l.startsWith('Environment=KK_AGENT_STATE_DIR=')) return `Environment=KK_AGENT_STATE_DIR=${o.prefix}/state`;
    if (l.startsWith('ExecStart=')) return `ExecStart=${o.prefix}/bin/kk agent`;
    if (o.user && l.startsWith('WantedBy=')) return 'WantedBy=default.target';
    return l;
  });
  // The template's header tells a person how to install it by hand; this copy says where it came from.
  const at = Math.max(0, out.findIndex((l) => l.startsWith('[Unit]')));
  return [`# Written by kk node install on ${o.date} from packaging/kk-agent.service: the agent in`, `# ${o.prefix} (configuration in ${o.prefix}/agent.env, state in ${o.prefix}/state).`, ...out.slice(at)].join('\n');
}

export default class NodeInstall extends KkCommand<typeof NodeInstall> {
  static override summary = 'Install the kk agent on a host over ssh, start it, and wait until it has enrolled.';
  static override description = `The host needs Node.js ${MIN_NODE} or later and an ssh login by key (BatchMode: no password prompts). kk copies itself (this kk and the packages it needs, a few MB compressed) into <prefix>/releases/<id> on the host, points <prefix>/current at it, writes <prefix>/agent.env (0600: server, registration token, name, tags, state dir) and <prefix>/kk-agent.service (from packaging/kk-agent.service), then starts the agent: with systemd where it runs (as root a system unit, else a user unit), with nohup when --start nohup, or prints the command to run. It waits until the agent has enrolled; with an admin token (--token, KK_TOKEN or the config file) also until the node is ONLINE. Running it again upgrades kk on the host and restarts the agent; the agent keeps its identity.`;
  static override examples = [
    '<%= config.bin %> node install ssh://deploy@web-1.internal --server https://kk.example.com --registration-token "$T" --tags role=web',
    '<%= config.bin %> node install ssh://root@10.0.0.7:2222 --server https://kk.example.com --registration-token "$T" --identity ~/.ssh/kk_deploy --name web-7',
  ];
  static override args = { host: Args.string({ description: 'ssh://user@host[:port] of the host.', required: true }) };
  static override flags = {
    server: Flags.string({ summary: 'The kk server URL the agent connects to.', env: 'KK_SERVER', required: true, helpValue: 'URL' }),
    'registration-token': Flags.string({ summary: 'Registration token for the agent (kk node token create).', env: 'KK_REGISTRATION_TOKEN', required: true, helpValue: 'TOKEN' }),
    name: Flags.string({ summary: 'Node name [default: the host\'s short host name].', helpValue: 'NAME' }),
    tags: Flags.string({ summary: 'Node tags, key=value[,key=value...].', helpValue: 'TAGS' }),
    identity: Flags.string({ char: 'i', summary: 'Private key for the ssh login.', helpValue: 'KEY' }),
    'ssh-option': Flags.string({ char: 'o', summary: 'Extra ssh option (repeatable), e.g. -o StrictHostKeyChecking=accept-new.', multiple: true, helpValue: 'OPTION' }),
    prefix: Flags.string({ summary: 'Where kk goes on the host; relative to the login\'s home.', default: '.kk/agent', helpValue: 'DIR' }),
    node: Flags.string({ summary: 'Node.js on the host [default: node on the login PATH].', helpValue: 'PATH' }),
    start: Flags.string({ summary: 'How to start the agent: auto (systemd where it runs, else print the command), systemd, nohup or none.', options: ['auto', 'systemd', 'nohup', 'none'], default: 'auto' }),
    'unit-template': Flags.string({ summary: 'systemd unit to adapt [default: packaging/kk-agent.service].', helpValue: 'FILE' }),
    wait: Flags.integer({ summary: 'Seconds to wait for the agent to enrol (0: do not wait).', default: 60, min: 0, max: 600, helpValue: 'SECONDS' }),
    token: Flags.string({ summary: 'Admin token to confirm the node is ONLINE [default: KK_TOKEN, else the config file].', helpValue: 'TOKEN' }),
  };

  protected async exec(): Promise<Outcome<InstallResult>> {
    const f = this.flags;
    const dest = parseDest(this.args.host);
    const where = `${dest.user ? `${dest.user}@` : ''}${dest.host}:${dest.port}`;
    const target = dest.user ? `${dest.user}@${dest.host}` : dest.host;
    const opts = ['-o', 'BatchMode=yes', '-o', 'ConnectTimeout=15', '-o', 'LogLevel=ERROR', '-p', String(dest.port), ...(f.identity ? ['-i', f.identity, '-o', 'IdentitiesOnly=yes'] : []), ...(f['ssh-option'] ?? []).flatMap((o) => ['-o', o])];
    const quiet = this.common.quiet || this.wantsJson();
    const step = (n: number, text: string) => !quiet && process.stderr.write(`kk: [${n}/6] ${text}\n`);
    safe(f.server, 'the server URL');
    safe(f['registration-token'], 'the registration token');
    if (f.tags) safe(f.tags, 'the tags');
    if (f.name) safe(f.name, 'the node name');

    // 1. The host: Node.js, home, systemd.
    step(1, `connecting to ${where}: Node.js, home directory, systemd`);
    const nodeBin = f.node ? `NODE=${sq(f.node)}` : 'NODE="$(command -v node || true)"';
    const probe = await ssh(opts, target, `sh -c ${sq(`${nodeBin}; echo "kk-install: home $HOME"; echo "kk-install: uid $(id -u)"; echo "kk-install: hostname $(hostname)"; if [ -n "$NODE" ] && [ -x "$NODE" ]; then echo "kk-install: node $NODE"; echo "kk-install: version $("$NODE" --version)"; fi; if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then if [ "$(id -u)" = 0 ] || systemctl --user show-environment >/dev/null 2>&1; then echo "kk-install: systemd yes"; fi; fi`)}`);
    if (probe.status !== 0) throw sshFailure(probe, where, 'probing the host');
    const host = said(probe.stdout);
    if (!host.node) throw new KkError('CONFIG_INVALID', `${where} has no Node.js on the login PATH (kk needs Node.js ${MIN_NODE} or later there)`, { hint: `install Node.js ${MIN_NODE}+ on the host, or pass --node /path/to/node` });
    const major = Number(/^v(\d+)\./.exec(host.version ?? '')?.[1]);
    if (!(major >= MIN_NODE)) throw new KkError('CONFIG_INVALID', `${where} has Node.js ${host.version ?? '(unknown version)'} at ${host.node}; kk needs ${MIN_NODE} or later`, { hint: `upgrade Node.js on the host, or pass --node with a Node.js ${MIN_NODE}+ binary` });
    if (!host.home) throw new KkError('BACKEND', `${where} did not say its home directory`);
    const prefix = f.prefix.startsWith('/') ? f.prefix.replace(/\/$/, '') : `${host.home.replace(/\/$/, '')}/${f.prefix.replace(/^\.\/|\/$/g, '')}`;
    safe(prefix, 'the prefix');
    const name = f.name ?? safe((host.hostname ?? '').split('.')[0] || dest.host.replace(/[^A-Za-z0-9._-]/g, '-'), 'the host name');
    const mode = f.start === 'auto' ? (host.systemd ? 'systemd' : 'none') : f.start;
    if (mode === 'systemd' && !host.systemd) throw new KkError('CONFIG_INVALID', `systemd does not run on ${where} (or not for this user)`, { hint: 'use --start nohup, or --start none and start the agent yourself' });
    const userUnit = mode === 'systemd' && host.uid !== '0';
    if (!quiet) process.stderr.write(`kk:       Node.js ${host.version} at ${host.node}; kk goes to ${prefix}${host.systemd ? '; systemd runs there' : '; no systemd there'}\n`);

    // 2-3. The release: this kk and its dependencies, streamed as tar.gz into <prefix>/releases/<id>.
    const root = await kkRoot();
    const pkgs = await closure(root);
    const version = (JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { version: string }).version;
    const release = `kk-${version}-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-')}`;
    step(2, `packing kk ${version}: ${pkgs.length} packages from ${root}`);
    const template = await unitTemplate(root, f['unit-template']);
    const unit = agentUnit(template, { prefix, user: userUnit, date: new Date().toISOString() });
    const env = [
      '# kk agent configuration, written by kk node install. The registration token is used once;',
      '# the node token it yields stays in the state dir (agent.json, 0600).',
      `KK_SERVER=${f.server}`,
      `KK_REGISTRATION_TOKEN=${f['registration-token']}`,
      `KK_NODE_NAME=${safe(name, 'the node name')}`,
      ...(f.tags ? [`KK_NODE_TAGS=${f.tags}`] : []),
      `KK_AGENT_STATE_DIR=${prefix}/state`,
      '',
    ].join('\n');
    const kkBin = `#!/bin/sh\n# kk on this host (installed by kk node install)\nexec ${sq(host.node)} ${sq(`${prefix}/current/node_modules/kk/bin/run.js`)} "$@"\n`;
    const agentBin = `#!/bin/sh\n# The kk agent with the configuration in agent.env (what the systemd unit runs, for nohup).\nset -a\n. ${sq(`${prefix}/agent.env`)}\nset +a\nexec ${sq(`${prefix}/bin/kk`)} agent\n`;
    // Starts the agent in the background (stopping one this script started before), for hosts without systemd.
    const startBin = [
      '#!/bin/sh',
      '# Start the kk agent in the background with nohup (hosts without systemd); log in agent.log.',
      `cd ${sq(prefix)} || exit 1`,
      'if [ -f agent.pid ] && kill -0 "$(cat agent.pid)" 2>/dev/null; then',
      '  kill "$(cat agent.pid)"',
      '  i=0; while [ $i -lt 40 ] && kill -0 "$(cat agent.pid)" 2>/dev/null; do sleep 0.5; i=$((i+1)); done',
      'fi',
      'if command -v setsid >/dev/null 2>&1; then setsid nohup ./bin/kk-agent >> agent.log 2>&1 < /dev/null & else nohup ./bin/kk-agent >> agent.log 2>&1 < /dev/null & fi',
      'echo $! > agent.pid',
      '',
    ].join('\n');
    const count = { files: 0, bytes: 0 };
    const tar = Readable.from(
      tarStream(pkgs, `releases/${release}`, [
        { path: 'agent.env', body: env, mode: 0o600 },
        { path: 'bin/kk', body: kkBin, mode: 0o755 },
        { path: 'bin/kk-agent', body: agentBin, mode: 0o755 },
        { path: 'bin/kk-agent-start', body: startBin, mode: 0o755 },
        { path: 'kk-agent.service', body: unit, mode: 0o644 },
      ], count),
    );
    step(3, `copying kk to ${where}:${prefix}/releases/${release}`);
    const up = await ssh(opts, target, `sh -c ${sq(`umask 077 && mkdir -p ${sq(prefix)} && cd ${sq(prefix)} && tar -xzf - --no-same-owner && chmod 0600 agent.env && chmod -R go-w releases && echo "kk-install: unpacked"`)}`, tar);
    if (up.status !== 0 || !said(up.stdout).unpacked) throw sshFailure(up, where, 'unpacking kk');
    if (!quiet) process.stderr.write(`kk:       ${count.files} files, ${(count.bytes / 1e6).toFixed(1)} MB\n`);

    // 4. Configuration in place: current -> the release, older releases removed (the newest two kept).
    step(4, `writing the agent's configuration (${prefix}/agent.env) and unit (${prefix}/kk-agent.service)`);
    const activate = [
      'set -e',
      `cd ${sq(prefix)}`,
      `ln -sfn ${sq(`releases/${release}`)} current.new && mv -Tf current.new current`,
      `ls -1t releases | tail -n +3 | while read -r d; do [ "$d" = ${sq(release)} ] || rm -rf "releases/$d"; done`,
      'mkdir -p state && chmod 0700 state',
      `"./bin/kk" --version >/dev/null && echo "kk-install: runs yes"`,
    ].join('\n');
    const act = await ssh(opts, target, 'sh -s', activate);
    if (act.status !== 0 || !said(act.stdout).runs) throw sshFailure(act, where, `running the installed kk (${prefix}/bin/kk --version)`);

    // 5. Start.
    const systemdCmd = userUnit
      ? `mkdir -p ~/.config/systemd/user && cp ${sq(`${prefix}/kk-agent.service`)} ~/.config/systemd/user/kk-agent.service && systemctl --user daemon-reload && systemctl --user enable kk-agent && systemctl --user restart kk-agent`
      : `install -m 0644 ${sq(`${prefix}/kk-agent.service`)} /etc/systemd/system/kk-agent.service && systemctl daemon-reload && systemctl enable kk-agent && systemctl restart kk-agent`;
    let started: InstallResult['started'] = 'none';
    let logLines = 0;
    const startCommand = mode === 'systemd' ? systemdCmd : `${prefix}/bin/kk-agent-start`;
    if (mode === 'none') {
      step(5, 'not starting the agent (no systemd there); on the host, run:');
      process.stderr.write(`    ${startCommand}\n    (the agent in the background with nohup, log in ${prefix}/agent.log; or under systemd: ${systemdCmd})\n`);
    } else {
      step(5, mode === 'systemd' ? `starting the agent with systemd (${userUnit ? 'user unit; run `loginctl enable-linger` for it to outlive logins' : '/etc/systemd/system/kk-agent.service'})` : `starting the agent with nohup (log: ${prefix}/agent.log)`);
      // With nohup, the agent's log says when the new process runs (an upgrade finds the old agent.json already there).
      const mark = `echo "kk-install: loglines $(cat ${sq(`${prefix}/agent.log`)} 2>/dev/null | wc -l)"`;
      const st = await ssh(opts, target, `sh -c ${sq(`${mode === 'systemd' ? systemdCmd : `${mark} && ${sq(`${prefix}/bin/kk-agent-start`)}`} && echo "kk-install: started"`)}`);
      logLines = Number(said(st.stdout).loglines ?? 0) || 0;
      if (st.status !== 0 || !said(st.stdout).started) throw sshFailure(st, where, 'starting the agent');
      started = mode === 'systemd' ? (userUnit ? 'systemd-user' : 'systemd') : 'nohup';
    }

    // 6. Enrolled (agent.json has the node id), then ONLINE when we may ask the server.
    let node: string | null = null;
    let status: string | null = null;
    if (started !== 'none' && f.wait > 0) {
      step(6, `waiting up to ${f.wait} s for the agent to enrol`);
      const check = [
        `cd ${sq(prefix)}`,
        `i=0; while [ $i -lt ${f.wait * 2} ]; do`,
        started === 'nohup'
          ? `  if [ -s state/agent.json ] && tail -n +${logLines + 1} agent.log 2>/dev/null | grep -q 'running against'; then break; fi`
          : '  if [ -s state/agent.json ]; then break; fi',
        `  if [ -f agent.pid ] && ! kill -0 "$(cat agent.pid)" 2>/dev/null && [ ${sq(started)} = nohup ]; then echo "kk-install: died yes"; break; fi`,
        '  sleep 0.5; i=$((i+1))',
        'done',
        `if [ -s state/agent.json ]; then ${sq(host.node)} -e 'const j=require(process.argv[1]);console.log("kk-install: node "+j.node)' "$PWD/state/agent.json"; fi`,
        'echo "kk-install: log-begin"; tail -n 5 agent.log 2>/dev/null || true',
      ].join('\n');
      const w = await ssh(opts, target, 'sh -s', check);
      const got = said(w.stdout);
      if (!got.node) {
        const log = w.stdout.split('kk-install: log-begin').pop()!.trim();
        throw new KkError('BACKEND', `the agent on ${where} did not enrol within ${f.wait} s${got.died ? ' (it exited)' : ''}${log ? `; its log ends with: ${log.split('\n').slice(-3).join(' | ')}` : ''}`, {
          hint: `look at ${prefix}/agent.log on the host${mode === 'systemd' ? ' and journalctl -u kk-agent' : ''}; a used-up or expired registration token needs a new one (kk node token create)`,
        });
      }
      node = got.node;
      const { token } = await serverOf({ server: f.server, token: f.token }, () => this.loadKkConfig({ required: false })).catch(() => ({ token: undefined }));
      if (token) {
        const client = new FleetClient(f.server, token);
        const end = Date.now() + f.wait * 1000;
        for (let i = 0; i < 600 && Date.now() < end; i++) {
          status = (await client.node(node).catch(() => undefined))?.status ?? null;
          if (status === 'ONLINE') break;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      if (!quiet) process.stderr.write(`kk:       enrolled as ${name} (${node})${status ? `, ${status}` : ''}\n`);
    }
    return {
      result: { host: where, prefix, release, node_version: host.version!, files: count.files, bytes: count.bytes, started, start_command: startCommand, node, name, status },
      render: (r) =>
        r.started === 'none'
          ? `kk: installed kk on ${r.host} (${r.prefix}); start the agent with: ${r.start_command}`
          : `kk: node ${r.name}${r.node ? ` (${r.node})` : ''} installed on ${r.host}, agent started with ${r.started}${r.status ? `: ${r.status}` : ''}`,
    };
  }
}
