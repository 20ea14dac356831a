// `shell`: run a script (<= 100 KB) in a working directory with extra environment; a non-zero
// exit fails the deploy, the deploy's timeout kills the script's process group. Rollback runs
// the optional rollback script in the same place.
import { KkError } from '@kk/core';
import type { AppliedResult, DeployKind, KindContext } from './runner.js';
import { checkScript, runScript } from './script.js';
import { PROGRESS, type ShellSpec } from './types.js';

export class ShellKind implements DeployKind {
  constructor(private readonly spec: ShellSpec) {}

  check(): void {
    checkScript(this.spec.script);
    if (this.spec.rollback_script !== undefined) checkScript(this.spec.rollback_script, 'rollback script');
  }

  async apply(ctx: KindContext): Promise<AppliedResult> {
    await ctx.status('script_running', PROGRESS.script_running, 'running the script');
    const r = await runScript(this.spec.script, { ...this.opts(), log: (l, s) => ctx.log(`${s}: ${l}`), signal: ctx.signal, onSpawn: (pid) => ctx.track(pid) });
    const result = { exit_code: r.code, stdout: r.stdout, stderr: r.stderr, duration_ms: r.duration_ms, ...(r.truncated ? { truncated_bytes: r.truncated } : {}) };
    if (r.code !== 0) {
      throw new KkError('BACKEND', `the script exited with ${r.signal ? `signal ${r.signal}` : `code ${r.code}`}${r.stderr.trim() ? `: ${r.stderr.trim().split('\n').pop()}` : ''}`, {
        hint: 'see the deploy logs',
        details: result,
      });
    }
    return { result };
  }

  async rollback(ctx: KindContext): Promise<{ to?: string }> {
    if (!this.spec.rollback_script) throw new KkError('NOTHING_TO_ROLLBACK', 'the deploy has no rollback script', { hint: 'give rollback_script to undo a shell deploy' });
    const r = await runScript(this.spec.rollback_script, { ...this.opts(), log: (l, s) => ctx.log(`rollback ${s}: ${l}`), signal: ctx.signal, onSpawn: (pid) => ctx.track(pid) });
    if (r.timedOut) throw new KkError('BACKEND', `the rollback script ran past ${this.spec.timeout_ms} ms`, { hint: 'see the deploy logs' });
    if (r.code !== 0) throw new KkError('BACKEND', `the rollback script exited with ${r.signal ?? r.code}`, { hint: 'see the deploy logs' });
    return { to: 'rollback script' };
  }

  private opts() {
    return { ...(this.spec.workdir ? { cwd: this.spec.workdir } : {}), ...(this.spec.env ? { env: this.spec.env } : {}), ...(this.spec.timeout_ms ? { timeoutMs: this.spec.timeout_ms } : {}) };
  }
}
