// Running a script: `/bin/sh -c` in its own process group (so a timeout ends its children too),
// with the agent's environment plus the deploy's, stdout and stderr captured up to a bound (the
// tail is kept, the rest counted) and each line passed to the log.
import { spawn } from 'node:child_process';
import { KkError } from '@kk/core';
import { MAX_SCRIPT_BYTES } from './types.js';

/** Bytes of stdout and of stderr kept per script (the tail). */
export const MAX_CAPTURE = 64 * 1024;

export interface ScriptResult {
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  /** Bytes dropped from the head of stdout + stderr to stay within MAX_CAPTURE. */
  truncated: number;
  duration_ms: number;
}

export interface ScriptOptions {
  cwd?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  log?: (line: string, stream: 'stdout' | 'stderr') => void;
  signal?: AbortSignal;
  /** The script's process (group) id, as soon as it runs: journalled so a restarted agent can end it. */
  onSpawn?: (pid: number) => void;
}

export function checkScript(content: string, what = 'script'): void {
  if (typeof content !== 'string' || !content.trim()) throw new KkError('CONFIG_INVALID', `the ${what} is empty`, { hint: 'give the script content' });
  const n = Buffer.byteLength(content);
  if (n > MAX_SCRIPT_BYTES) {
    throw new KkError('CONFIG_INVALID', `the ${what} is ${n} bytes, over the ${MAX_SCRIPT_BYTES}-byte limit`, { hint: 'ship a large script as a kk version or tar and run it from there' });
  }
}

class Capture {
  buf = '';
  dropped = 0;
  private partial = '';
  constructor(private readonly onLine?: (line: string) => void) {}
  add(chunk: string) {
    this.buf += chunk;
    if (this.buf.length > MAX_CAPTURE) {
      this.dropped += this.buf.length - MAX_CAPTURE;
      this.buf = this.buf.slice(-MAX_CAPTURE);
    }
    if (!this.onLine) return;
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    if (this.partial.length > 4096) {
      lines.push(this.partial);
      this.partial = '';
    }
    for (const l of lines) this.onLine(l.slice(0, 4096));
  }
  end() {
    if (this.partial && this.onLine) this.onLine(this.partial.slice(0, 4096));
    this.partial = '';
  }
}

export function runScript(content: string, opts: ScriptOptions = {}): Promise<ScriptResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', content], {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    if (child.pid !== undefined) opts.onSpawn?.(child.pid);
    const out = new Capture(opts.log && ((l) => opts.log!(l, 'stdout')));
    const err = new Capture(opts.log && ((l) => opts.log!(l, 'stderr')));
    child.stdout.setEncoding('utf8').on('data', (d: string) => out.add(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => err.add(d));
    let timedOut = false;
    const killGroup = () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          killGroup();
        }, opts.timeoutMs)
      : undefined;
    const onAbort = () => killGroup();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new KkError('CONFIG_INVALID', `cannot run the script: ${e.message}`, { hint: 'check the working directory exists' }));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      out.end();
      err.end();
      resolve({ code, signal, timedOut, stdout: out.buf, stderr: err.buf, truncated: out.dropped + err.dropped, duration_ms: Date.now() - started });
    });
  });
}
