// @kk/agent: what runs on a node (DESIGN 13). The loop, the outbox, the executor and the API
// client are separate modules, each usable and testable on its own.
export { Agent, type AgentOptions, type AgentStats } from './agent.js';
export { FleetClient } from './fleet-client.js';
export { HttpAgentApi, parseTags, request, type AgentApi, type ClaimedTask, type HeartbeatAnswer, type Identity, type LogLine, type Report, type Tags, type TaskOutcome, type TaskResult } from './api.js';
export { DEFAULT_IGNORE, PullExecutor, ignoreRules, literalPattern, outcomeOf, type ExecutionContext, type PullExecutorOptions, type TaskExecutor } from './executor.js';
export { identityFile, loadIdentity, saveIdentity, type StoredIdentity } from './identity.js';
export { Outbox, type FlushResult, type OutboxEntry } from './outbox.js';
export * as deploy from './deploy/index.js';
export { DeployLoop, HttpDeployApi, agentDeploys, type AgentDeploysOptions, type ClaimedDeploy, type DeployApi, type DeployLoopOptions } from './deploy-loop.js';
export { DeployClient, type DeployHistoryEntry } from './deploy-client.js';
