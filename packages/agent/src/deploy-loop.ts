// The agent's deploy loop (DESIGN 14, seed deploy-08..31): beside the sync loop, long-poll the
// server for this node's pending deploy (one at a time: the server keeps one active deploy per
// node, and this loop never claims while one runs), run it with the Deployer (stages, health
// check, automatic rollback, all journalled on the node), send each stage as a DeployStatusReport
// and the final DeployCallbackPayload under the claim's attempt id. The journal is the outbox: a
// final outcome the server has not acknowledged stays there and is sent again until it is
// accepted (or refused for good). On start, deploys a crash interrupted are finished or rolled
// back first (Deployer.recover) and their outcomes reported once the server answers. The docker
// monitor sends the state of the containers kk deployed on its interval.
import { setMaxListeners } from 'node:events';
import { join } from 'node:path';
import { type Hasher, KkError, Store, isKkError } from '@kk/core';
import { openDriver } from '@kk/drivers';
import { type Identity, request } from './api.js';
import { DockerEngine, socketPathOf } from './deploy/docker.js';
import { defaultKinds } from './deploy/index.js';
import { monitorContainers, type ContainerReport } from './deploy/monitor.js';
import { Deployer, type KindFactory } from './deploy/runner.js';
import type { DeployCallbackPayload, DeploySpec, DeployStatusReport } from './deploy/types.js';

/** A deploy as the server's claim hands it out (the fields the agent uses). */
export interface ClaimedDeploy {
  attempt_id: string;
  /** A pull token for what this deploy reads from the store (kk versions, tar uploads). */
  store_token?: string;
  deploy: { id: string; node: string; deploy_type: DeploySpec['type']; command_type: string; spec: Record<string, unknown>; rollback_of?: string };
}

/** The server's deploy routes as the agent uses them (packages/server/src/routes/deploy.ts). */
export interface DeployApi {
  claim(id: Identity, waitMs: number, signal?: AbortSignal): Promise<ClaimedDeploy | undefined>;
  report(id: Identity, deployId: string, attemptId: string, r: DeployStatusReport): Promise<void>;
  callback(id: Identity, deployId: string, attemptId: string, p: DeployCallbackPayload): Promise<void>;
  monitor(id: Identity, containers: ContainerReport[]): Promise<void>;
}

export class HttpDeployApi implements DeployApi {
  constructor(
    private readonly server: string,
    private readonly timeoutMs = 30_000,
  ) {}

  async claim(id: Identity, waitMs: number, signal?: AbortSignal): Promise<ClaimedDeploy | undefined> {
    const r = await request(this.server, 'POST', `api/deploy/agent/claim?wait_ms=${Math.max(0, Math.round(waitMs))}`, {}, id.token, { ...(signal ? { signal } : {}), timeoutMs: waitMs + this.timeoutMs });
    return r.status === 204 || !r.json?.deploy ? undefined : (r.json as ClaimedDeploy);
  }

  async report(id: Identity, deployId: string, attemptId: string, r: DeployStatusReport): Promise<void> {
    // Reports are best effort: a short limit, so a missing server does not hold the deploy up.
    await request(this.server, 'POST', `api/deploy/${encodeURIComponent(deployId)}/report`, { attempt_id: attemptId, ...r }, id.token, { timeoutMs: 5_000 });
  }

  async callback(id: Identity, deployId: string, attemptId: string, p: DeployCallbackPayload): Promise<void> {
    await request(this.server, 'POST', `api/deploy/${encodeURIComponent(deployId)}/callback`, { attempt_id: attemptId, ...p }, id.token, { timeoutMs: this.timeoutMs });
  }

  async monitor(id: Identity, containers: ContainerReport[]): Promise<void> {
    await request(this.server, 'POST', `api/docker/monitor/${encodeURIComponent(id.node)}`, { containers }, id.token, { timeoutMs: this.timeoutMs });
  }
}

export interface DeployLoopOptions {
  api: DeployApi;
  /** The deploy journal lives in `<stateDir>/deploys`. */
  stateDir: string;
  kinds: KindFactory;
  /** Long-poll wait. Default 25 s. */
  pollWaitMs?: number;
  /** How often unreported outcomes are sent again. Default 10 s. */
  resendEveryMs?: number;
  /** The docker monitor: an engine socket and an interval (default 30 s). Off without it. */
  monitor?: { dockerHost?: string; everyMs?: number };
  log?: (line: string) => void;
}

/** Codes after which the server will never accept the same callback: stop sending it. */
const FINAL = new Set(['LOCKED', 'NOT_FOUND', 'FORBIDDEN', 'CONFIG_INVALID']);

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

export class DeployLoop {
  readonly deployer: Deployer;
  readonly stats = { deploys: 0, succeeded: 0, failed: 0, recovered: 0 };
  private readonly attempts = new Map<string, string>();
  private readonly stopping = new AbortController();
  private loops: Promise<unknown>[] = [];
  private current: string | undefined;
  private currentToken: string | undefined;
  private reports: Promise<void> = Promise.resolve();
  private readonly log: (line: string) => void;
  private id: Identity | undefined;

  constructor(private readonly opts: DeployLoopOptions) {
    this.log = opts.log ?? (() => {});
    setMaxListeners(100, this.stopping.signal);
    this.deployer = new Deployer({
      journalDir: join(opts.stateDir, 'deploys'),
      kinds: opts.kinds,
      onReport: (r) => this.queueReport(r),
      onCallback: (p) => this.sendCallback(p),
    });
  }

  /** The deploy running now, if any. */
  get running(): string | undefined {
    return this.current;
  }

  /** The store token the running deploy's claim brought. */
  get storeToken(): string | undefined {
    return this.currentToken;
  }

  /** Recover what a crash interrupted, then claim and run deploys until stop(). */
  start(id: Identity): void {
    this.id = id;
    this.loops = [this.workLoop(), this.resendLoop(), ...(this.opts.monitor ? [this.monitorLoop(this.opts.monitor)] : [])];
  }

  /** Claim nothing more; the running deploy finishes (it is journalled: a hard kill is recovered on restart). */
  async stop(): Promise<void> {
    this.stopping.abort();
    await Promise.all(this.loops);
  }

  private get stopped(): boolean {
    return this.stopping.signal.aborted;
  }

  private async workLoop(): Promise<void> {
    // First what a crash left behind: finished or rolled back before anything new is claimed.
    for (const e of await this.deployer.journal.list()) if (e.attempt_id) this.attempts.set(e.id, e.attempt_id);
    const recovered = await this.deployer.recover().catch((err: unknown) => {
      this.log(`deploy recovery failed: ${(err as Error).message}`);
      return [];
    });
    for (const e of recovered) {
      this.stats.recovered++;
      this.log(`deploy ${e.id}: recovered after a restart, ended ${e.status}`);
    }
    await this.resend();
    let backoff = 500;
    while (!this.stopped) {
      let claim: ClaimedDeploy | undefined;
      try {
        claim = await this.opts.api.claim(this.id!, this.opts.pollWaitMs ?? 25_000, this.stopping.signal);
        backoff = 500;
      } catch (err) {
        if (this.stopped) return;
        this.log(`deploy claim failed: ${(err as Error).message}`);
        await sleep(backoff, this.stopping.signal);
        backoff = Math.min(5_000, backoff * 2);
        continue;
      }
      if (claim) await this.run(claim);
    }
  }

  /** Run one claimed deploy to its final status (and report it). */
  async run(claim: ClaimedDeploy): Promise<void> {
    const d = claim.deploy;
    this.current = d.id;
    this.currentToken = claim.store_token;
    this.stats.deploys++;
    this.attempts.set(d.id, claim.attempt_id);
    this.log(`deploy ${d.id}: ${d.command_type}${d.rollback_of ? ` of ${d.rollback_of}` : ''}`);
    try {
      const known = await this.deployer.journal.read(d.id);
      if (known) {
        // Claimed again (our earlier answer was lost): the journal has it; report what it holds.
        known.attempt_id = claim.attempt_id;
        await this.deployer.journal.write(known);
        if (known.phase === 'done' && known.callback) await this.sendCallback(known.callback).then(() => this.deployer.markReported(d.id)).catch(() => {});
        return;
      }
      const spec = { ...d.spec, type: d.deploy_type } as DeploySpec;
      let e;
      try {
        e = d.rollback_of ? await this.deployer.rollbackOf(d.id, d.rollback_of, { attempt_id: claim.attempt_id }) : await this.deployer.deploy(d.id, spec, { attempt_id: claim.attempt_id });
      } catch (err) {
        // Refused before anything ran (no journal entry): say so and end it.
        await this.refuse(claim, err);
        this.stats.failed++;
        return;
      }
      if (e.status === 'success' || (e.rollback_of && e.status === 'rolled_back')) this.stats.succeeded++;
      else this.stats.failed++;
      this.log(`deploy ${d.id}: ${e.status}${e.error ? ` (${e.error})` : ''}`);
    } finally {
      this.current = undefined;
      this.currentToken = undefined;
    }
  }

  private async refuse(claim: ClaimedDeploy, err: unknown): Promise<void> {
    const d = claim.deploy;
    const msg = err instanceof Error ? (isKkError(err) && err.hint ? `${err.message} (${err.hint})` : err.message) : String(err);
    const code = isKkError(err) ? err.code : 'FAILED';
    const time = new Date().toISOString();
    const command = (d.command_type || `deploy.${d.deploy_type}`) as DeployStatusReport['command_type'];
    this.log(`deploy ${d.id}: refused: ${msg}`);
    await this.queueReport({ deploy_id: d.id, command_type: command, status: 'failed', progress: 0, stage: 'failed', message: msg, logs: [`${time} refused: ${msg}`], timestamp: time });
    await this.sendCallback({ callback_id: d.id, command_type: command, deploy_type: d.deploy_type, status: 'failed', success: false, result: { error_code: code }, error: msg, duration: 0, timestamp: time }).catch((e: unknown) => this.log(`deploy ${d.id}: cannot report the refusal: ${(e as Error).message}`));
  }

  /** Reports go out in order, one at a time, without holding the deploy up; a failed one is dropped. */
  private queueReport(r: DeployStatusReport): Promise<void> {
    const attempt = this.attempts.get(r.deploy_id);
    if (!attempt || !this.id) return Promise.resolve();
    const id = this.id;
    this.reports = this.reports.then(() =>
      this.opts.api.report(id, r.deploy_id, attempt, r).catch((err: unknown) => {
        if (!isKkError(err, 'BACKEND')) this.log(`deploy ${r.deploy_id}: report ${r.status} refused: ${(err as Error).message}`);
      }),
    );
    return Promise.resolve();
  }

  /** The final outcome, after the reports before it. Throws (kept in the journal) when the server cannot take it now. */
  private async sendCallback(p: DeployCallbackPayload): Promise<void> {
    await this.reports;
    const attempt = this.attempts.get(p.callback_id) ?? (await this.deployer.journal.read(p.callback_id))?.attempt_id;
    if (!attempt || !this.id) throw new KkError('CONFIG_MISSING', `deploy ${p.callback_id} has no attempt to report under`);
    try {
      await this.opts.api.callback(this.id, p.callback_id, attempt, p);
    } catch (err) {
      if (isKkError(err) && FINAL.has(err.code)) {
        this.log(`deploy ${p.callback_id}: the server refused the outcome for good (${err.code}): ${err.message}`);
        return;
      }
      throw err;
    }
  }

  private async resend(): Promise<void> {
    for (const e of await this.deployer.unreported()) {
      if (!e.callback || e.id === this.current) continue;
      try {
        await this.sendCallback(e.callback);
        await this.deployer.markReported(e.id);
        this.log(`deploy ${e.id}: outcome ${e.status} reported`);
      } catch (err) {
        if (isKkError(err, 'CONFIG_MISSING')) {
          // Run without a claim (before this agent spoke to a deploy server): nobody to tell.
          await this.deployer.markReported(e.id);
          continue;
        }
        return; // the server is still away: next round
      }
    }
  }

  private async resendLoop(): Promise<void> {
    while (!this.stopped) {
      await sleep(this.opts.resendEveryMs ?? 10_000, this.stopping.signal);
      if (this.stopped) return;
      await this.resend().catch(() => {});
    }
  }

  private async monitorLoop(m: { dockerHost?: string; everyMs?: number }): Promise<void> {
    let engine: DockerEngine;
    try {
      engine = new DockerEngine(socketPathOf(m.dockerHost));
    } catch (err) {
      this.log(`docker monitor off: ${(err as Error).message}`);
      return;
    }
    let warned = false;
    while (!this.stopped) {
      try {
        const containers = await monitorContainers(engine);
        await this.opts.api.monitor(this.id!, containers);
        warned = false;
      } catch (err) {
        if (!warned) this.log(`docker monitor: ${(err as Error).message}`);
        warned = true;
      }
      await sleep(m.everyMs ?? 30_000, this.stopping.signal);
    }
  }
}

export interface AgentDeploysOptions {
  server: string;
  stateDir: string;
  hasher: Hasher;
  /** The store kk deploys pull from (default: the server) and its token. */
  storeUrl?: string;
  storeToken?: string;
  /** DOCKER_HOST for docker deploys and the monitor (default: the environment's). */
  dockerHost?: string;
  /** Send docker monitor samples (default: when DOCKER_HOST is set). */
  monitor?: boolean;
  pollWaitMs?: number;
  log?: (line: string) => void;
}

/** The deploy loop as `kk agent` runs it: every kind, kk versions from the server's store. */
export function agentDeploys(o: AgentDeploysOptions): DeployLoop {
  // The store is opened with the running deploy's claim token (scoped to what it reads), else
  // the agent's own; one open store per token.
  const stores = new Map<string, Promise<Store>>();
  let loop: DeployLoop | undefined;
  const openStore = () => {
    const token = (o.storeUrl ? undefined : loop?.storeToken) ?? o.storeToken ?? '';
    let s = stores.get(token);
    if (!s) {
      if (stores.size > 4) stores.clear();
      s = openDriver(o.storeUrl ?? o.server, token ? { token } : {})
        .then((driver) => Store.open(driver))
        .catch((err: unknown) => {
          stores.delete(token);
          throw err;
        });
      stores.set(token, s);
    }
    return s;
  };
  const monitor = o.monitor ?? !!(o.dockerHost ?? process.env.DOCKER_HOST);
  loop = new DeployLoop({
    api: new HttpDeployApi(o.server),
    stateDir: o.stateDir,
    kinds: defaultKinds({ kk: { store: openStore, hasher: o.hasher, stateDir: join(o.stateDir, 'deploy-targets') }, docker: o.dockerHost ? { dockerHost: o.dockerHost } : {} }),
    ...(o.pollWaitMs !== undefined ? { pollWaitMs: o.pollWaitMs } : {}),
    ...(monitor ? { monitor: o.dockerHost ? { dockerHost: o.dockerHost } : {} } : {}),
    ...(o.log ? { log: o.log } : {}),
  });
  return loop;
}
