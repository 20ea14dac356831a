// `kk`: apply a kk version to a directory with core's pull, between optional pre and post hook
// scripts (run in the directory). Rollback is core's rollback: the previous version from local
// state (manifest copy and file cache), so it needs no network; then the post hook again.
import { mkdir } from 'node:fs/promises';
import { type Hasher, KkError, type StoreSource, pull, rollback } from '@kk/core';
import type { AppliedResult, DeployKind, KindContext } from './runner.js';
import { checkScript, runScript } from './script.js';
import { type KkSpec, PROGRESS } from './types.js';

export interface KkKindEnv {
  store: StoreSource;
  hasher: Hasher;
  stateDir: string;
}

export class KkKind implements DeployKind {
  constructor(
    private readonly spec: KkSpec,
    private readonly env: KkKindEnv,
  ) {}

  check(): void {
    if (this.spec.pre !== undefined) checkScript(this.spec.pre, 'pre hook');
    if (this.spec.post !== undefined) checkScript(this.spec.post, 'post hook');
  }

  private async hook(ctx: KindContext, which: 'pre' | 'post', cwd: string): Promise<void> {
    const script = this.spec[which];
    if (!script) return;
    await ctx.status('script_running', which === 'pre' ? 10 : 80, `running the ${which} hook`);
    const r = await runScript(script, { cwd, ...(this.spec.env ? { env: this.spec.env } : {}), log: (l, s) => ctx.log(`${which} ${s}: ${l}`), signal: ctx.signal, onSpawn: (pid) => ctx.track(pid) });
    if (r.code !== 0) throw new KkError('BACKEND', `the ${which} hook exited with ${r.signal ?? r.code}`, { hint: 'see the deploy logs' });
  }

  async apply(ctx: KindContext): Promise<AppliedResult> {
    const { project, app, version, path } = this.spec;
    await ctx.save({ version });
    // The hooks run in the directory; the first deploy creates it (pull takes over an empty one).
    await mkdir(path, { recursive: true });
    if (this.spec.pre) await this.hook(ctx, 'pre', path);
    await ctx.status('executing', 20, `applying ${project}/${app} ${version}`);
    const r = await pull({
      store: this.env.store,
      hasher: this.env.hasher,
      stateDir: this.env.stateDir,
      project,
      app,
      version,
      target: path,
      adopt: true,
      command: 'kk agent deploy',
      onProgress: (e) => void e,
    });
    await ctx.save({ pulled: true, previous: r.previous ?? null });
    ctx.log(`applied ${version} (${r.paths.added.length} added, ${r.paths.changed.length} changed, ${r.paths.deleted.length} deleted)`);
    if (this.spec.post) await this.hook(ctx, 'post', path);
    return { result: { manifest: r.manifest, ...(r.previous ? { previous: r.previous } : {}), seconds: Math.round(r.durationMs) / 1000 }, version };
  }

  async rollback(ctx: KindContext): Promise<{ to?: string }> {
    // Core's pull commits all or nothing: a failure before it committed left the directory as it was.
    if (!ctx.saved.pulled) return { to: 'unchanged' };
    const r = await rollback({ target: this.spec.path, stateDir: this.env.stateDir, hasher: this.env.hasher, store: this.env.store, project: this.spec.project, app: this.spec.app, command: 'kk agent rollback' });
    ctx.log(`rolled back to ${r.version}`);
    if (this.spec.post) {
      const s = await runScript(this.spec.post, { cwd: this.spec.path, ...(this.spec.env ? { env: this.spec.env } : {}), log: (l, st) => ctx.log(`post ${st}: ${l}`), signal: ctx.signal, onSpawn: (pid) => ctx.track(pid) });
      if (s.code !== 0) throw new KkError('BACKEND', `the post hook exited with ${s.signal ?? s.code} after the rollback`, { hint: 'see the deploy logs' });
    }
    void PROGRESS;
    return { to: r.version };
  }
}
