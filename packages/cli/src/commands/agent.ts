import { hostname } from 'node:os';
import { join } from 'node:path';
import { Flags } from '@oclif/core';
import { Agent, HttpAgentApi, PullExecutor, agentDeploys, parseTags } from '@kk/agent';
import { agentId, defaultStateRoot } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';

interface AgentRunResult {
  node: string;
  name: string;
  stopped: string;
  tasks: number;
  succeeded: number;
  failed: number;
}

export default class AgentCommand extends KkCommand<typeof AgentCommand> {
  static override summary = 'Run the kk agent on a node: enrol once, heartbeat, long-poll the server for sync tasks and apply them.';
  static override description = `The agent makes outbound HTTP(S) requests only, so it works behind NAT. The first start trades --registration-token (from \`kk node token create\`) for a node token kept in the state dir (mode 0600); later starts need neither the registration token nor the name. It runs one task at a time: core's pull of the task's version into the target directory, in-process, with the target's strategy (mirror or overlay) and include/exclude rules on top of the defaults .git/, runtime/ and tmp/. Stage, progress and log lines go to the server; reports it cannot send yet wait in a local outbox and are sent after a reconnect, and a task that has started is finished even while the server is away. SIGTERM or SIGINT: no new task is claimed, the running one finishes, then the agent exits. Log lines go to stderr.`;
  static override examples = [
    '<%= config.bin %> agent --server https://kk.example.com --registration-token "$T" --name web-1 --tags region=eu,role=web',
    '<%= config.bin %> agent --server https://kk.example.com --state-dir /var/lib/kk-agent',
  ];
  static override flags = {
    server: Flags.string({ summary: 'The kk server URL.', env: 'KK_SERVER', required: true, helpValue: 'URL' }),
    'registration-token': Flags.string({ summary: 'Registration token for the first start (kk node token create).', env: 'KK_REGISTRATION_TOKEN', helpValue: 'TOKEN' }),
    name: Flags.string({ summary: 'Node name at enrolment [default: the host name].', env: 'KK_NODE_NAME', helpValue: 'NAME' }),
    tags: Flags.string({ summary: 'Node tags at enrolment, key=value[,key=value...].', env: 'KK_NODE_TAGS', helpValue: 'TAGS' }),
    'state-dir': Flags.string({ summary: 'Where the agent keeps its identity, outbox and the targets\' state [default: $KK_STATE_DIR/agent or ~/.local/state/kk/agent].', env: 'KK_AGENT_STATE_DIR', helpValue: 'DIR' }),
    store: Flags.string({ summary: 'Store to pull from [default: the server itself].', helpValue: 'URL' }),
    'fallback-store': Flags.string({
      summary: 'A store tried next when the store fails with a backend error (repeatable, in order), e.g. the S3 bucket behind the server; opened with its own credentials.',
      env: 'KK_FALLBACK_STORES',
      multiple: true,
      delimiter: ',',
      helpValue: 'URL',
    }),
    'rate-limit': Flags.integer({ summary: 'At most N store read requests a second per task.', env: 'KK_RATE_LIMIT', min: 1, helpValue: 'N' }),
    'store-token': Flags.string({ summary: 'Token for --store [default: the node token when pulling from the server].', env: 'KK_STORE_TOKEN', helpValue: 'TOKEN' }),
    concurrency: Flags.integer({ summary: 'Parallel fetches inside one task [default: 8].', min: 1, max: 256, helpValue: 'N' }),
    'allow-root': Flags.string({ summary: 'Only apply targets whose path lies in this directory; repeatable [default: any absolute path].', env: 'KK_AGENT_ALLOW_ROOTS', multiple: true, delimiter: ',', helpValue: 'DIR' }),
    'poll-wait': Flags.integer({ summary: 'Seconds one long-poll waits for work [default: 25].', min: 0, max: 300, helpValue: 'SECONDS' }),
  };

  protected async exec(): Promise<Outcome<AgentRunResult>> {
    const f = this.flags;
    const stateDir = f['state-dir'] ?? join(process.env.KK_STATE_DIR || defaultStateRoot(), 'agent');
    const api = new HttpAgentApi(f.server);
    const log = (line: string) => process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), msg: line })}\n`);
    const name = f.name ?? hostname().split('.')[0]!;
    // The executor needs the identity (its token reads the store); enrol first.
    const bootstrap = new Agent({ api, executor: { run: async () => ({ ok: false, code: 'INTERNAL', reason: 'not started' }) }, stateDir, server: f.server, name, tags: parseTags(f.tags), ...(f['registration-token'] ? { registrationToken: f['registration-token'] } : {}), log });
    const id = await bootstrap.ensureIdentity();
    const executor = new PullExecutor({
      storeUrl: f.store ?? f.server,
      // Pulling from the server: each claim brings a pull token scoped to its task's app.
      token: f['store-token'] ?? (f.store ? undefined : id.store_token),
      claimToken: !f.store,
      hasher: this.hasher,
      stateDir: join(stateDir, 'targets'),
      agent: await agentId(),
      ...(f.concurrency ? { concurrency: f.concurrency } : {}),
      ...(f['allow-root']?.length ? { allowedRoots: f['allow-root'] } : {}),
      ...(f['fallback-store']?.length ? { fallbackStores: f['fallback-store'] } : {}),
      ...(f['rate-limit'] ? { rateLimit: f['rate-limit'] } : {}),
    } as ConstructorParameters<typeof PullExecutor>[0]);
    // Deploys (kk deploy ...): one at a time beside the sync tasks, journalled in the state dir.
    const deploys = agentDeploys({ server: f.server, stateDir, hasher: this.hasher, ...(f.store ? { storeUrl: f.store } : {}), ...(f['store-token'] ? { storeToken: f['store-token'] } : {}), log, ...(f['poll-wait'] !== undefined ? { pollWaitMs: f['poll-wait'] * 1000 } : {}) });
    const agent = new Agent({ api, executor, deploys, stateDir, server: f.server, name: id.name, log, ...(f['poll-wait'] !== undefined ? { pollWaitMs: f['poll-wait'] * 1000 } : {}), info: () => ({ agent: 'kk agent', name: id.name, ...(f['allow-root']?.length ? { allowed_roots: f['allow-root'] } : {}) }) });
    // Stop cleanly instead of the base command's immediate exit: the running task finishes.
    process.removeAllListeners('SIGINT');
    process.removeAllListeners('SIGTERM');
    await agent.start();
    log(`agent ${id.name} (${id.node}) running against ${f.server}; state in ${stateDir}`);
    const signal = await new Promise<NodeJS.Signals>((done) => {
      process.once('SIGINT', () => done('SIGINT'));
      process.once('SIGTERM', () => done('SIGTERM'));
    });
    log(`${signal}: finishing the running task, then stopping`);
    await agent.stop();
    return { result: { node: id.node, name: id.name, stopped: signal, ...agent.stats } as AgentRunResult, render: (r) => `kk: agent ${r.name} stopped (${r.stopped}) after ${r.tasks} task(s)` };
  }
}
