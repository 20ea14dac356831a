// `kk deploy status ID [--follow]`, and what every `kk deploy <kind>` shares (exported from here:
// oclif loads each file of commands/ as a command): the flags of seed 003 (--node, --health,
// --health-retries, --health-interval, --health-timeout, --no-rollback, --wait, --json), the
// request body they make, and --wait / --follow, which print each stage as the server records it.
import { readFile } from 'node:fs/promises';
import { Args, Errors, Flags } from '@oclif/core';
import { DeployClient, type DeployHistoryEntry } from '@kk/agent';
import { KkError } from '@kk/core';
import { KkCommand, type Outcome } from '../../base.js';
import { EXIT, type ExitCode } from '../../exit-codes.js';
import { parseDuration } from '../../format.js';
import { serverFlags, serverOf } from '../token/list.js';

type J = Record<string, any>;

export const deployFlags = {
  ...serverFlags,
  node: Flags.string({ summary: 'The node to deploy on (name or id).', required: true, helpValue: 'NODE' }),
  health: Flags.string({ summary: 'Health check after the deploy (and after a rollback): http://HOST:PORT/PATH (200-399), tcp://HOST:PORT (a connection) or script:CMD (exit 0).', helpValue: 'CHECK' }),
  'health-retries': Flags.integer({ summary: 'Probes after the first failed one [default: 3].', min: 0, max: 100, helpValue: 'N' }),
  'health-interval': Flags.string({ summary: 'Pause between probes [default: 10s].', helpValue: 'DURATION' }),
  'health-timeout': Flags.string({ summary: 'How long the whole health check may take [default: 60s]; one probe gets at most 5s.', helpValue: 'DURATION' }),
  timeout: Flags.string({ summary: 'How long the work may run before it is stopped and rolled back [default: 10m].', helpValue: 'DURATION' }),
  'no-rollback': Flags.boolean({ summary: 'Do not roll back on a failure (the failure is still recorded and the version marked bad).' }),
  wait: Flags.boolean({ summary: 'Print each stage and wait until the deploy has ended; exit 0 only when it succeeded.' }),
  'callback-url': Flags.string({ summary: 'Send the signed DeployCallbackPayload here when the deploy ends.', helpValue: 'URL' }),
  'idempotency-key': Flags.string({ summary: 'Make the request repeatable: the same key returns the same deploy.', helpValue: 'KEY' }),
  force: Flags.boolean({ summary: 'Deploy even a version marked bad for this target.' }),
};

export interface DeployFlagValues {
  server?: string | undefined;
  token?: string | undefined;
  node: string;
  health?: string | undefined;
  'health-retries'?: number | undefined;
  'health-interval'?: string | undefined;
  'health-timeout'?: string | undefined;
  timeout?: string | undefined;
  'no-rollback'?: boolean | undefined;
  wait?: boolean | undefined;
  'callback-url'?: string | undefined;
  'idempotency-key'?: string | undefined;
  force?: boolean | undefined;
  json?: boolean | undefined;
  quiet?: boolean | undefined;
}

const usage = (message: string) => new Errors.CLIError(message, { exit: EXIT.USAGE });

/** `http://HOST:PORT/PATH`, `tcp://HOST:PORT` or `script:CMD` as the API's health object. */
export function parseHealth(text: string): J {
  if (text.startsWith('script:')) {
    const script = text.slice('script:'.length).trim();
    if (!script) throw usage('--health script: needs a command, e.g. script:"curl -fs localhost:8080/health"');
    return { type: 'script', script };
  }
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw usage(`--health ${JSON.stringify(text)} is not http://HOST:PORT/PATH, tcp://HOST:PORT or script:CMD`);
  }
  const port = Number(u.port || (u.protocol === 'http:' ? 80 : NaN));
  if (!Number.isInteger(port)) throw usage(`--health ${text}: give the port (tcp://HOST:PORT)`);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (u.protocol === 'http:') return { type: 'http', host, port, path: `${u.pathname || '/'}${u.search}` };
  if (u.protocol === 'tcp:') return { type: 'tcp', host, port };
  throw usage(`--health ${text}: use http://, tcp:// or script:`);
}

/** The request body's common part from the flags. */
export function commonBody(f: DeployFlagValues): J {
  const b: J = { node: f.node };
  if (f.health) {
    const h = parseHealth(f.health);
    if (f['health-retries'] !== undefined) h.retries = f['health-retries'];
    if (f['health-interval'] !== undefined) h.interval_ms = parseDuration(f['health-interval'], '--health-interval');
    if (f['health-timeout'] !== undefined) {
      h.deadline_ms = parseDuration(f['health-timeout'], '--health-timeout');
      if (h.deadline_ms < 5_000) h.timeout_ms = Math.max(1, h.deadline_ms);
    }
    b.health = h;
  } else if (f['health-retries'] !== undefined || f['health-interval'] || f['health-timeout']) {
    throw usage('--health-retries, --health-interval and --health-timeout need --health');
  }
  if (f.timeout) b.timeout_ms = parseDuration(f.timeout, '--timeout');
  if (f['no-rollback']) b.rollback = false;
  if (f['callback-url']) b.callback_url = f['callback-url'];
  if (f.force) b.force = true;
  return b;
}

/** `K=V` flags as an object. */
export function keyValues(list: string[] | undefined, flag: string): Record<string, string> | undefined {
  if (!list?.length) return undefined;
  const out: Record<string, string> = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw usage(`${flag} ${JSON.stringify(kv)} must be KEY=VALUE`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

export async function scriptFile(file: string, flag: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new KkError('CONFIG_INVALID', `${flag} ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
}

export function renderRecord(d: J): string {
  return `kk: deploy ${d.id} (${d.command_type}) on node ${d.node}: ${d.status} ${d.progress}%${d.error ? ` - ${d.error}` : ''}`;
}

function renderEntry(e: DeployHistoryEntry): string {
  return `${e.time}  ${e.status.padEnd(15)} ${String(e.progress).padStart(3)}%  ${e.message}`;
}

/** Whether a finished deploy did what was asked (a manual rollback asks for rolled_back). */
export function succeeded(d: J): boolean {
  return d.status === 'success' || (d.command_type === 'deploy.rollback' && d.status === 'rolled_back');
}

/** Follow a deploy to its end, printing stages on stderr (not with --quiet); the outcome and exit code. */
export async function waitFor(client: DeployClient, record: J, quiet: boolean): Promise<{ record: J; exitCode: ExitCode }> {
  const final = await client.follow(record.id, (e) => {
    if (!quiet) process.stderr.write(`${renderEntry(e)}\n`);
  });
  return { record: final, exitCode: succeeded(final) ? EXIT.OK : EXIT.ERROR };
}

/** Create a deploy of `kind` and (with --wait) follow it. */
export async function runDeploy(cmd: { loadConfig(): Promise<any> }, f: DeployFlagValues, kind: 'kk' | 'shell' | 'tar' | 'docker', body: J): Promise<Outcome<J>> {
  const { url, token } = await serverOf(f, () => cmd.loadConfig());
  const client = new DeployClient(url, token);
  const created = await client.create(kind, { ...commonBody(f), ...body }, f['idempotency-key']);
  if (!f.wait) return { result: created, render: (d) => [renderRecord(d), `kk: follow it with kk deploy status ${d.id} --follow`] };
  if (!f.quiet) process.stderr.write(`kk: deploy ${created.id} accepted (${created.location})\n`);
  const { record, exitCode } = await waitFor(client, created, !!f.quiet);
  return { result: record, exitCode, render: (d) => renderRecord(d) };
}

export default class DeployStatus extends KkCommand<typeof DeployStatus> {
  static override summary = 'Show a deploy: its status, progress and status history; --follow prints stages live until it ends.';
  static override examples = ['<%= config.bin %> deploy status dep-0abc', '<%= config.bin %> deploy status dep-0abc --follow', '<%= config.bin %> deploy status dep-0abc --json'];
  static override args = { id: Args.string({ description: 'The deploy id.', required: true }) };
  static override flags = {
    ...serverFlags,
    follow: Flags.boolean({ char: 'f', summary: 'Print each new stage until the deploy ends; exit 0 only when it succeeded.' }),
    logs: Flags.boolean({ summary: 'Also print the deploy\'s log lines.' }),
  };

  protected async exec(): Promise<Outcome<J>> {
    const f = this.flags;
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const client = new DeployClient(url, token);
    if (f.follow) {
      const { record, exitCode } = await waitFor(client, await client.get(this.args.id), !!f.quiet);
      return { result: record, exitCode, render: (d) => renderRecord(d) };
    }
    const [d, h, logs] = await Promise.all([client.get(this.args.id), client.history(this.args.id), f.logs ? client.logs(this.args.id) : undefined]);
    const result = { ...d, history: h.items, ...(logs ? { logs: logs.items } : {}) };
    return {
      result,
      essential: true,
      render: (r) => [renderRecord(r), ...r.history.map(renderEntry), ...(r.logs ? ['logs:', ...r.logs.map((l: J) => `  ${l.line}`)] : [])],
    };
  }
}
