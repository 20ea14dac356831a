import { dirname, resolve } from 'node:path';
import { Flags } from '@oclif/core';
import { type ServerConfig, createKkServer, loadServerConfig } from '@kk/server';
import { KkCommand, type Outcome } from '../base.js';

interface ServeResult {
  url: string;
  store: string;
  stopped: string;
}

export default class Serve extends KkCommand<typeof Serve> {
  static override summary = 'Run the kk server: the HTTP API, tokens, webhooks and the nightly retention over a store.';
  static override description = `Serves a store over HTTP so a fleet pushes and pulls through one authenticated endpoint (clients use \`server_url\` and \`token\` in .kkartifact.yml). The store defaults to a file store under ./kk-data. KK_ADMIN_TOKEN presets a global admin token; without it, the first start on an empty store prints a one-time admin token on stderr. The control database (tokens, webhooks and their deliveries, upload sessions, audit, events) is --db: sqlite:///path/kk.db (the default is a SQLite file at <store>/server/kk.db for a file store, else under $KK_STATE_DIR or ~/.local/state/kk) or postgres://user:password@host:5432/db, which several kk serve instances on one store share; its schema is migrated at start, and server state an older kk kept in the store is imported once. A server config file (--config, YAML) sets db, retain_versions, retention_schedule (cron, default 03:00 daily), webhooks and limits. Logs are JSON lines on stdout, and nothing else is printed there (--log-level debug adds a line per chunk request). Stops cleanly on SIGINT or SIGTERM.`;
  static override examples = [
    '<%= config.bin %> serve',
    'KK_ADMIN_TOKEN=$(openssl rand -hex 32) <%= config.bin %> serve --store s3://bucket/kk?region=eu-west-1 --listen 0.0.0.0:8080',
    '<%= config.bin %> serve --config /etc/kk/kk-server.yml',
  ];
  static override flags = {
    store: Flags.string({ char: 's', summary: 'Store URL or path [default: the config file\'s store, else ./kk-data].', env: 'KK_STORE', helpValue: 'URL' }),
    listen: Flags.string({ char: 'l', summary: 'Address to listen on [default: the config file\'s listen, else 127.0.0.1:8080].', env: 'KK_LISTEN', helpValue: 'HOST:PORT' }),
    db: Flags.string({ summary: 'Control database: sqlite:///path/kk.db or postgres://user:password@host:5432/db [default: the config file\'s db, else SQLite in the store\'s server/ directory].', env: 'KK_DB', helpValue: 'URL' }),
    config: Flags.string({ summary: 'Server config file (YAML: retain_versions, retention_schedule, webhooks, ...).', env: 'KK_SERVER_CONFIG', helpValue: 'FILE' }),
    'retain-versions': Flags.integer({ summary: 'Keep the newest N versions of every app at each retention run [default: the config file\'s, else all].', min: 1, helpValue: 'N' }),
    'log-level': Flags.string({
      summary: 'Least severe log lines written: debug (adds every chunk request), info, warn or error.',
      options: ['debug', 'info', 'warn', 'error'],
      default: 'info',
      env: 'KK_LOG_LEVEL',
    }),
  };

  protected async exec(): Promise<Outcome<ServeResult>> {
    const f = this.flags;
    const file = f.config ? await loadServerConfig(f.config) : undefined;
    const config: Partial<ServerConfig> = { ...file?.config };
    if (f['retain-versions']) config.retainVersions = f['retain-versions'];
    // A store named in the config file is relative to that file; --store to the current directory.
    const store = f.store ?? (file?.store ? file.store : './kk-data');
    const cwd = !f.store && file?.store ? dirname(resolve(f.config!)) : process.cwd();
    // oclif has checked the value against `options`.
    const logLevel = f['log-level'] as 'debug' | 'info' | 'warn' | 'error';
    // A relative sqlite path in the config file is relative to that file, like its store.
    const db = f.db ?? (config.db && f.config ? relativeSqlite(config.db, dirname(resolve(f.config))) : config.db);
    delete config.db;
    const server = await createKkServer({ store, cwd, adminToken: process.env.KK_ADMIN_TOKEN || undefined, config, logLevel, ...(db ? { db } : {}) });
    // Shown before the server listens, so whoever waits for the `listening` line has it.
    if (server.initialAdminToken) {
      process.stderr.write(
        `kk: first start on an empty store: the admin token is shown once, keep it safe:\n${server.initialAdminToken}\n` +
          'kk: create narrower tokens with `kk token create --server URL --token <admin token> --scope ... --permissions ...`\n',
      );
    }
    let url: string;
    try {
      url = await server.listen(f.listen ?? file?.listen ?? '127.0.0.1:8080');
    } catch (err) {
      await server.close();
      throw err;
    }
    // The server stops gracefully (in-flight requests finish, the outbox stays for the next
    // start) instead of the base command's immediate exit on a signal.
    process.removeAllListeners('SIGINT');
    process.removeAllListeners('SIGTERM');
    const signal = await new Promise<NodeJS.Signals>((done) => {
      process.once('SIGINT', () => done('SIGINT'));
      process.once('SIGTERM', () => done('SIGTERM'));
    });
    // The server logs its own `stopped` line: stdout stays JSON lines only.
    await server.close();
    return { result: { url, store, stopped: signal } };
  }
}

/** `sqlite:relative/kk.db` from a config file resolves against the file's directory. */
function relativeSqlite(url: string, dir: string): string {
  const m = /^sqlite:(?!\/\/)(?!:memory:)(.+)$/.exec(url);
  return m ? `sqlite://${resolve(dir, m[1]!)}` : url;
}
