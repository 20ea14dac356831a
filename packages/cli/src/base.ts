// The base of every kk command. A command implements `exec()`: parse -> one core call -> an
// Outcome (the typed result plus how to render it). The base prints it (a JSON document with
// --json, lines for a person otherwise), owns the hasher pool and the progress display, finds
// the config file and the store, and turns any failure into one line and a documented exit code.
import { dirname } from 'node:path';
import { Command, Errors, type Interfaces } from '@oclif/core';
import {
  CONFIG_FILE,
  type FallbackEvent,
  type Hasher,
  type KkConfig,
  KkError,
  type OpenStoreOptions,
  type ProgressCallback,
  Store,
  createHasher,
  isKkError,
  loadConfig,
} from '@kk/core';
import { type OpenDriverOptions, describeStoreUrl, openDriver, openDriverChain } from '@kk/drivers';
import { EXIT, type ExitCode, describeFailure } from './exit-codes.js';
import { outputFlags } from './flags.js';
import { type ProgressDisplay, type ProgressMode, createProgress } from './progress.js';

export type KkFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof KkCommand)['baseFlags'] & T['flags']>;
export type KkArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>;

/** What a command produced. `result` is the --json document (plus `seconds`). */
export interface Outcome<R extends object = object> {
  result: R;
  /** Lines for a person on stdout; not printed with --json, nor with --quiet unless `essential`. */
  render?(result: R): string | string[];
  /** The rendering is the command's purpose (a listing, a manifest): --quiet keeps it. */
  essential?: boolean;
  /** Default EXIT.OK. `kk diff` exits 1 when there are changes, `kk verify` 3 on a mismatch. */
  exitCode?: ExitCode;
}

/** Flags that several commands define (see flags.ts); the helpers below read them when present. */
interface CommonFlags {
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
  store?: string;
  config?: string;
  token?: string;
  concurrency?: number;
  'state-dir'?: string;
}

/** Store location as the user gave it, and the directory a relative path resolves against. */
export interface StoreLocation {
  url: string;
  cwd: string;
}

export abstract class KkCommand<T extends typeof Command> extends Command {
  static override baseFlags = outputFlags;

  protected flags!: KkFlags<T>;
  protected args!: KkArgs<T>;

  private readonly startedAt = performance.now();
  private pool: Hasher | undefined;
  private display: ProgressDisplay | undefined;
  private readonly stores: Store[] = [];

  protected abstract exec(): Promise<Outcome>;

  override async init(): Promise<void> {
    await super.init();
    // `kk manifest ... | head`: a reader that went away is not an error.
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? EXIT.OK);
      throw err;
    });
    // Ctrl-C: end the progress line cleanly; an interrupted apply is finished by the next run.
    for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      process.once(signal, () => {
        this.stopProgress();
        process.stderr.write(`\nkk: interrupted (${signal})\n`);
        process.exit(code);
      });
    }
    const ctor = this.ctor as typeof KkCommand;
    const { args, flags } = await this.parse({
      flags: ctor.flags,
      baseFlags: ctor.baseFlags,
      args: ctor.args,
      strict: ctor.strict,
    });
    this.flags = flags as KkFlags<T>;
    this.args = args as KkArgs<T>;
  }

  async run(): Promise<void> {
    const outcome = await this.exec();
    this.stopProgress();
    const seconds = Math.round(performance.now() - this.startedAt) / 1000;
    if (this.wantsJson()) {
      writeJson({ ...outcome.result, seconds });
    } else if (outcome.render && (!this.common.quiet || outcome.essential)) {
      const text = outcome.render(outcome.result);
      const lines = Array.isArray(text) ? text : text === '' ? [] : [text];
      if (lines.length) process.stdout.write(`${lines.join('\n')}\n`);
    }
    process.exitCode = outcome.exitCode ?? EXIT.OK;
  }

  /** A command whose own results use exit 1 (kk diff) moves failures elsewhere. */
  protected failureExitCode(code: ExitCode): ExitCode {
    return code;
  }

  /** One line saying what happened, the next step below it, then the documented exit code. */
  override async catch(err: Error): Promise<never> {
    this.stopProgress();
    if (err instanceof Errors.ExitError) throw err;
    const report = describeFailure(err);
    report.exitCode = this.failureExitCode(report.exitCode);
    if (this.wantsJson()) {
      writeJson({ error: report });
    } else {
      const lines = [`kk: ${report.message}`];
      if (report.hint) lines.push(...report.hint.split('\n').filter((l) => l.trim() !== '').map((l) => `  ${l}`));
      if (this.common?.verbose) {
        if (err.stack) lines.push(err.stack);
        if (err.cause) lines.push(`caused by: ${err.cause instanceof Error ? (err.cause.stack ?? err.cause.message) : String(err.cause)}`);
      }
      process.stderr.write(`${lines.join('\n')}\n`);
    }
    return this.exit(report.exitCode) as never;
  }

  override async finally(err: Error | undefined): Promise<void> {
    this.stopProgress();
    const pool = this.pool;
    this.pool = undefined;
    // Without this the worker threads (and a remote store's sockets) keep the process alive.
    if (pool) await pool.close().catch(() => {});
    for (const store of this.stores.splice(0)) await store.driver.close().catch(() => {});
    await super.finally(err);
  }

  // ---- helpers for commands ----

  protected get common(): CommonFlags {
    return (this.flags ?? {}) as CommonFlags;
  }

  protected wantsJson(): boolean {
    return this.flags ? !!this.common.json : this.argv.includes('--json');
  }

  /** The hashing/chunking worker pool, created on first use and closed when the command ends. */
  protected get hasher(): Hasher {
    this.pool ??= createHasher();
    return this.pool;
  }

  /** Progress for core calls: a bar on a terminal, periodic lines otherwise, nothing with --quiet/--json. */
  protected get onProgress(): ProgressCallback {
    this.display ??= createProgress(this.progressMode());
    return this.display.onProgress;
  }

  protected progressMode(): ProgressMode {
    if (this.common.quiet || this.wantsJson()) return 'off';
    return process.stderr.isTTY ? 'bar' : 'lines';
  }

  protected stopProgress(): void {
    this.display?.stop();
  }

  /**
   * The config file: --config > $KK_CONFIG > ./.kkartifact.yml. `required` (push, pull,
   * rollback) refuses to go on without it; otherwise only the default file may be absent.
   */
  protected async loadKkConfig(opts: { required: boolean }): Promise<KkConfig | undefined> {
    const explicit = this.common.config;
    try {
      return await loadConfig(explicit ?? CONFIG_FILE);
    } catch (err) {
      if (!opts.required && explicit === undefined && isKkError(err, 'CONFIG_MISSING')) return undefined;
      throw err;
    }
  }

  /** --store / $KK_STORE (relative to the current directory) > the config's store (relative to the config file). */
  protected storeLocation(config: KkConfig | undefined): StoreLocation {
    const flag = this.common.store;
    if (flag) return { url: flag, cwd: process.cwd() };
    if (config?.store) return { url: config.store, cwd: dirname(config.path) };
    if (config) {
      throw new KkError('CONFIG_INVALID', `${config.path} names no store`, {
        hint: 'add a line such as `store: ./kk-store` (or `server_url: https://...`), or pass --store URL',
        details: { path: config.path },
      });
    }
    throw new KkError('CONFIG_MISSING', `no store given and ./${CONFIG_FILE} does not exist`, {
      hint: `pass --store URL, set KK_STORE, or create ${CONFIG_FILE} with a line such as \`store: ./kk-store\``,
    });
  }

  /** Open the store chosen by storeLocation(). Push passes `{create: true, avgChunkSize}`. */
  protected async openStore(config: KkConfig | undefined, opts: OpenStoreOptions = {}): Promise<Store> {
    return this.openStoreLocation(this.storeLocation(config), opts, this.common.token ?? process.env.KK_TOKEN ?? config?.token);
  }

  /** Open a store at any location (`kk copy` opens two); it is closed when the command ends. */
  protected async openStoreLocation(loc: StoreLocation, opts: OpenStoreOptions = {}, token?: string): Promise<Store> {
    const store = await openStoreAt(loc, opts, token);
    this.stores.push(store);
    return store;
  }

  /**
   * Open the store for a pull: the store of storeLocation(), then the fallback stores (flags, else
   * the config's `fallback_stores`) tried in order when one fails with a backend error, reads capped
   * by `rateLimit` requests a second. `fallbacks` records each switch for the result.
   */
  protected async openPullStore(config: KkConfig | undefined, opts: { fallbackStores?: string[]; rateLimit?: number } = {}): Promise<{ store: Store; fallbacks: FallbackEvent[] }> {
    const primary = this.storeLocation(config);
    const extra: StoreLocation[] = opts.fallbackStores?.length
      ? opts.fallbackStores.map((url) => ({ url, cwd: process.cwd() }))
      : (config?.fallbackStores ?? []).map((url) => ({ url, cwd: dirname(config!.path) }));
    const rate = opts.rateLimit ?? config?.rateLimit;
    const token = this.common.token ?? process.env.KK_TOKEN ?? config?.token;
    if (!extra.length && !rate) return { store: await this.openStoreLocation(primary, {}, token), fallbacks: [] };
    const say = (e: FallbackEvent) => process.stderr.write(`kk: store ${e.from} failed (${e.reason}); using ${e.to}\n`);
    const { driver, events } = await openDriverChain(
      [primary, ...extra].map((loc) => ({ url: loc.url, opts: { cwd: loc.cwd, ...(token ? { token } : {}) } })),
      { ...(rate ? { rateLimit: rate } : {}), onFallback: say },
    );
    let store: Store;
    try {
      store = await Store.open(driver);
    } catch (err) {
      await driver.close().catch(() => {});
      throw err;
    }
    this.stores.push(store);
    return { store, fallbacks: events };
  }

  /** --concurrency > the config's `concurrency` > 8. */
  protected concurrency(config: KkConfig | undefined): number {
    return this.common.concurrency ?? config?.concurrency ?? 8;
  }

  protected stateDir(): string | undefined {
    return this.common['state-dir'];
  }
}

/**
 * Open a store from a location. `token` is handed to drivers that authenticate (the CLI passes
 * --token > KK_TOKEN > the config's `token`). The caller closes `store.driver`.
 */
export async function openStoreAt(loc: StoreLocation, opts: OpenStoreOptions = {}, token?: string): Promise<Store> {
  const driverOpts: OpenDriverOptions = { cwd: loc.cwd };
  if (token) driverOpts.token = token;
  const driver = await openDriver(loc.url, driverOpts);
  try {
    return await Store.open(driver, opts);
  } catch (err) {
    await driver.close().catch(() => {});
    if (isKkError(err, 'NOT_FOUND')) {
      throw new KkError('NOT_FOUND', `no kk store at ${describeStoreUrl(loc.url)}`, {
        hint: 'check --store or the config\'s `store:`; the first `kk push` creates a store',
        details: { store: describeStoreUrl(loc.url) },
      });
    }
    throw err;
  }
}

export function writeJson(doc: unknown): void {
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
}
