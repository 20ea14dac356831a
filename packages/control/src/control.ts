// The control plane as one object: open (and migrate) the database, then its repositories.
// `activity` is the one write path for a state change: the audit row, the event and its webhook
// deliveries commit together, so none exists without the others.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { AuditLog, type AuditEntry } from './audit.js';
import { ControlDb, type OpenOptions } from './db.js';
import { type EventInput, Events } from './events.js';
import { Fleet, type FleetOptions } from './fleet/fleet.js';
import { Deploys } from './deploys/deploys.js';
import { Leases } from './leases.js';
import { type MigrateResult, migrate } from './migrations.js';
import { Settings } from './settings.js';
import { Tokens } from './tokens.js';
import { Uploads } from './uploads.js';
import { stripUndefined } from './util.js';
import { Webhooks } from './webhooks.js';

export interface ControlOptions extends OpenOptions {
  /** Token with global admin rights (KK_ADMIN_TOKEN), compared in constant time; never stored. */
  adminToken?: string;
  /** Secret for webhooks created without one. */
  webhookSecret?: string;
  /** This instance's name in claims and leases (default host:pid:random). */
  owner?: string;
  /** Fleet timings (heartbeat interval, offline threshold, lease). */
  fleet?: FleetOptions;
}

export interface ActivityInput {
  action: string;
  token: string;
  agent?: string;
  address?: string;
  project?: string;
  app?: string;
  version?: string;
  manifest?: string;
  channel?: string;
  previous?: string;
  details?: Record<string, unknown>;
  /** When it happened (default now): set when a deferred write is retried. */
  time?: string;
}

export class Control {
  readonly tokens: Tokens;
  readonly webhooks: Webhooks;
  readonly events: Events;
  readonly audit: AuditLog;
  readonly uploads: Uploads;
  readonly leases: Leases;
  readonly settings: Settings;
  readonly fleet: Fleet;
  readonly deploys: Deploys;
  readonly owner: string;

  private constructor(
    readonly cdb: ControlDb,
    readonly migration: MigrateResult,
    opts: ControlOptions,
  ) {
    this.tokens = new Tokens(cdb, opts.adminToken);
    this.webhooks = new Webhooks(cdb, opts.webhookSecret);
    this.events = new Events(cdb);
    this.audit = new AuditLog(cdb);
    this.uploads = new Uploads(cdb);
    this.leases = new Leases(cdb);
    this.settings = new Settings(cdb);
    this.fleet = new Fleet(cdb, this.events, opts.fleet);
    this.deploys = new Deploys(cdb, this.events, this.webhooks, opts.webhookSecret ? { callbackSecret: opts.webhookSecret } : {});
    this.owner = opts.owner ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  }

  /** Open the database at `url` and bring its schema up to date (BACKEND, CONFIG_INVALID, STORE_INVALID). */
  static async open(url: string, opts: ControlOptions = {}): Promise<Control> {
    const cdb = await ControlDb.open(url, opts);
    try {
      const m = await migrate(cdb);
      return new Control(cdb, m, opts);
    } catch (err) {
      await cdb.close();
      throw err;
    }
  }

  get dialect() {
    return this.cdb.dialect;
  }

  /**
   * Record a state change: its audit entry and its event (webhook event types with a project and
   * app also get their deliveries), in one transaction. Returns the event's seq.
   */
  async activity(a: ActivityInput): Promise<{ seq: number; audit: AuditEntry; deliveries: string[] }> {
    return this.cdb.writeTx(async (tx) => {
      const details = a.previous ? { ...a.details, previous: a.previous } : a.details;
      const audit = await this.audit.record(
        stripUndefined({ action: a.action, token: a.token, agent: a.agent, address: a.address, project: a.project, app: a.app, version: a.version, manifest: a.manifest, channel: a.channel, details, time: a.time }),
        tx,
      );
      const ev: EventInput = {
        type: a.action,
        actor: stripUndefined({ token: a.token, agent: a.agent, address: a.address }) as EventInput['actor'],
        time: audit.time,
      };
      if (a.project) ev.project = a.project;
      if (a.app) ev.app = a.app;
      if (a.version) ev.version = a.version;
      if (a.manifest) ev.manifest = a.manifest;
      if (a.channel) ev.channel = a.channel;
      if (a.previous) ev.previous = a.previous;
      if (a.details && !['push', 'pull', 'promote', 'rollback', 'delete'].includes(a.action)) ev.details = a.details;
      const { seq, deliveries } = await this.events.append(tx, ev);
      return { seq, audit, deliveries };
    });
  }

  close(): Promise<void> {
    return this.cdb.close();
  }
}
