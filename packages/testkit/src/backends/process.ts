// Child-process plumbing shared by the backend launchers: wait for a readiness line, stop.
import type { ChildProcess } from 'node:child_process';

/**
 * Resolves with the match of `pattern` once the child prints it on stdout or stderr; rejects
 * (with everything it printed) if it exits, fails to spawn, or stays silent for `timeoutMs`.
 * Afterwards its pipes keep draining, so a chatty server never blocks on a full pipe.
 */
export function waitForLine(child: ChildProcess, name: string, pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let output = '';
    const streams = [child.stdout, child.stderr].filter((s) => s !== null);
    const fail = (why: string) => {
      cleanup();
      reject(new Error(`${name} did not start: ${why}${output ? `\n${output.trim()}` : ''}`));
    };
    const onData = (data: Buffer) => {
      output += data.toString();
      const m = pattern.exec(output);
      if (m) {
        cleanup();
        resolve(m);
      }
    };
    const onExit = (code: number | null, signal: string | null) => fail(`exited with ${signal ?? `code ${code}`}`);
    const onError = (err: Error) => fail(err.message);
    const timer = setTimeout(() => fail(`no line matching ${pattern} within ${timeoutMs} ms`), timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      for (const s of streams) {
        s.off('data', onData);
        s.resume();
      }
      child.off('exit', onExit);
      child.off('error', onError);
    };
    for (const s of streams) s.on('data', onData);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}

/** SIGTERM, then SIGKILL after 5 s; resolves when the child is gone. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Kill `child` if this process exits first; the returned stop() (idempotent) ends it, removes
 * that guard and then runs `cleanup` once.
 */
export function guardChild(child: ChildProcess, cleanup: () => Promise<void> = async () => {}): () => Promise<void> {
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let stopped: Promise<void> | undefined;
  return () =>
    (stopped ??= (async () => {
      process.off('exit', killOnExit);
      await stopChild(child);
      await cleanup();
    })());
}
