// Shared by the CLI end-to-end tests: run the built `kk` in a sandbox directory whose state dir,
// store and trees all live under one temp directory.
import { type ChildProcess, spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const KK_BIN = fileURLToPath(new URL('../bin/run.js', import.meta.url));
/** Where `npm ci` links the `kk` executable. */
export const BIN_DIR = join(REPO_ROOT, 'node_modules', '.bin');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment every kk run sees: no inherited kk settings, no forced colours. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['KK_STORE', 'KK_CONFIG', 'KK_TOKEN', 'KK_STATE_DIR', 'FORCE_COLOR', 'NO_COLOR', 'XDG_STATE_HOME']) delete env[k];
  return { ...env, ...extra };
}

/** Run a command to completion, collecting its output. */
export function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) =>
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }),
    );
  });
}

export interface Sandbox {
  root: string;
  stateDir: string;
  path(...p: string[]): string;
  /** Run `kk args...` in the sandbox (or `cwd`), with KK_STATE_DIR inside it. */
  kk(args: string[], opts?: { cwd?: string; env?: Record<string, string> }): Promise<RunResult>;
  /** Like kk() with --json appended; fails unless stdout is exactly one JSON document. */
  kkJson<T = Record<string, any>>(args: string[], opts?: { cwd?: string; env?: Record<string, string> }): Promise<RunResult & { json: T }>;
  cleanup(): Promise<void>;
}

export async function sandbox(): Promise<Sandbox> {
  const root = await mkdtemp(join(tmpdir(), 'kk-cli-'));
  const stateDir = join(root, 'state');
  const sb: Sandbox = {
    root,
    stateDir,
    path: (...p) => join(root, ...p),
    kk: (args, opts = {}) => run(process.execPath, [KK_BIN, ...args], { cwd: opts.cwd ?? root, env: cleanEnv({ KK_STATE_DIR: stateDir, ...opts.env }) }),
    async kkJson(args, opts) {
      const r = await sb.kk([...args, '--json'], opts);
      let json: any;
      try {
        json = JSON.parse(r.stdout);
      } catch {
        throw new Error(`kk ${args.join(' ')} --json: stdout is not one JSON document (exit ${r.code}):\n${r.stdout}\nstderr:\n${r.stderr}`);
      }
      return { ...r, json };
    },
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
  return sb;
}

/** Write files (string or bytes; `mode` optional) under `dir`. */
export async function writeTree(dir: string, files: Record<string, string | Buffer | { data: string | Buffer; mode: number }>): Promise<void> {
  for (const [rel, spec] of Object.entries(files)) {
    const abs = join(dir, rel);
    await mkdir(dirname(abs), { recursive: true });
    const data = typeof spec === 'string' || Buffer.isBuffer(spec) ? spec : spec.data;
    await writeFile(abs, data);
    if (typeof spec === 'object' && !Buffer.isBuffer(spec)) await chmod(abs, spec.mode);
  }
}

/** Deterministic incompressible bytes. */
export function pseudoRandom(size: number, seed: string): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(seed).digest();
  for (let off = 0; off < size; off += block.length) {
    block.copy(out, off, 0, Math.min(block.length, size - off));
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

/** `rsync -rcn --delete --itemize-changes a/ b/`: prints nothing when b holds exactly a's files and bytes. */
export async function rsyncDifferences(expected: string, actual: string, excludes: string[] = []): Promise<string> {
  const r = await run('rsync', ['-rcn', '--delete', '--itemize-changes', ...excludes.map((e) => `--exclude=${e}`), `${expected}/`, `${actual}/`], {
    cwd: tmpdir(),
    env: process.env,
  });
  if (r.code !== 0) throw new Error(`rsync failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** path -> permission bits of every file and directory under `dir`. */
export async function modes(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const abs = join(e.parentPath, e.name);
    out[abs.slice(dir.length + 1)] = ((await stat(abs)).mode & 0o7777).toString(8);
  }
  return out;
}

export async function sha256Of(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** Any ANSI/VT escape sequence (CSI, OSC, or a bare ESC). */
export const ANSI = /\u001b/;

/** Write `size` deterministic incompressible bytes (AES-CTR keystream of `seed`), 8 MiB at a time. */
export async function writeRandomFile(path: string, size: number, seed: string): Promise<void> {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  const zeros = Buffer.alloc(8 * 1024 * 1024);
  await mkdir(dirname(path), { recursive: true });
  const fh = await open(path, 'w');
  try {
    for (let left = size; left > 0; ) {
      const n = Math.min(left, zeros.length);
      await fh.write(cipher.update(zeros.subarray(0, n)));
      left -= n;
    }
  } finally {
    await fh.close();
  }
}

/** Start `kk serve ARGS` (a real process) and resolve once it logs that it listens (30 s at most). */
export function spawnServe(args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }): Promise<ChildProcess> {
  return new Promise<ChildProcess>((resolve, reject) => {
    const child = spawn(process.execPath, [KK_BIN, 'serve', ...args], { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`kk serve did not listen within 30 s:\n${out}`)), 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('"msg":"listening"')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => reject(new Error(`kk serve exited with ${code}:\n${out}`)));
  });
}
