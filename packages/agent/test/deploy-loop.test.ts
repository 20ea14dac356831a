// The agent's deploy loop against a fake deploy API: one claim at a time, reports in order under
// the claim's attempt, the final callback kept in the journal while the server is away and sent
// once it answers, a deploy refused before it ran reported as failed, and a claim answered twice
// (the first answer lost) not run twice.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KkError } from '@kk/core';
import { afterEach, expect, it } from 'vitest';
import { type ClaimedDeploy, type DeployApi, DeployLoop, deploy } from '../src/index.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

class FakeDeployApi implements DeployApi {
  queue: ClaimedDeploy[] = [];
  reports: { id: string; attempt: string; status: string; logs: string[] }[] = [];
  callbacks: { id: string; attempt: string; status: string; success: boolean; error: string }[] = [];
  down = false;
  claims = 0;
  async claim(): Promise<ClaimedDeploy | undefined> {
    this.claims++;
    const c = this.queue.shift();
    if (!c) await new Promise((r) => setTimeout(r, 20));
    return c;
  }
  async report(_id: unknown, deployId: string, attempt: string, r: deploy.DeployStatusReport): Promise<void> {
    this.reports.push({ id: deployId, attempt, status: r.status, logs: r.logs });
  }
  async callback(_id: unknown, deployId: string, attempt: string, p: deploy.DeployCallbackPayload): Promise<void> {
    if (this.down) throw new KkError('BACKEND', 'cannot reach the kk server');
    this.callbacks.push({ id: deployId, attempt, status: p.status, success: p.success, error: p.error });
  }
  async monitor(): Promise<void> {}
}

async function until<T>(what: string, fn: () => T | undefined | false, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const shell = (id: string, attempt: string, script: string, extra: Record<string, unknown> = {}): ClaimedDeploy => ({
  attempt_id: attempt,
  deploy: { id, node: 'nd-1', deploy_type: 'shell', command_type: 'deploy.shell', spec: { type: 'shell', script, ...extra } },
});

it('claims one deploy at a time, reports in order under the attempt; a callback the server cannot take now is sent when it is back', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kk-deploy-loop-'));
  dirs.push(dir);
  const api = new FakeDeployApi();
  const loop = new DeployLoop({ api, stateDir: dir, kinds: deploy.defaultKinds(), pollWaitMs: 10, resendEveryMs: 50 });
  api.queue.push(shell('dep-1', 'da-1', 'echo one'), shell('dep-1', 'da-1b', 'echo one'));
  loop.start({ node: 'nd-1', token: 'kkn_x' });
  await until('the first callback', () => api.callbacks.length >= 1);
  expect(api.callbacks[0]).toMatchObject({ id: 'dep-1', attempt: 'da-1', status: 'success', success: true });
  expect(api.reports.filter((r) => r.id === 'dep-1').map((r) => r.status)).toEqual(['pending', 'executing', 'script_running', 'success']);
  expect(api.reports.every((r) => r.attempt === 'da-1')).toBe(true);
  expect(api.reports.flatMap((r) => r.logs).join('\n')).toMatch(/stdout: one/);
  // The same deploy claimed again (the first answer was lost): not run twice; its outcome is sent under the new attempt.
  await until('the second claim', () => api.callbacks.length === 2);
  expect(api.callbacks[1]).toMatchObject({ id: 'dep-1', attempt: 'da-1b', status: 'success' });
  expect(api.reports.filter((r) => r.status === 'script_running')).toHaveLength(1);

  // The server goes away before the outcome: it waits in the journal and goes out later.
  api.down = true;
  api.queue.push(shell('dep-2', 'da-2', 'exit 3', { rollback: false }));
  await until('dep-2 finished locally', () => api.reports.some((r) => r.id === 'dep-2' && r.status === 'failed'));
  for (let i = 0; i < 500 && (await loop.deployer.unreported()).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  expect(api.callbacks.some((c) => c.id === 'dep-2')).toBe(false);
  expect((await loop.deployer.unreported()).map((e) => e.id)).toEqual(['dep-2']);
  api.down = false;
  await until('dep-2 reported', () => api.callbacks.find((c) => c.id === 'dep-2'));
  expect(api.callbacks.find((c) => c.id === 'dep-2')).toMatchObject({ attempt: 'da-2', status: 'failed', success: false, error: expect.stringMatching(/exited with code 3/) });
  for (let i = 0; i < 500 && (await loop.deployer.unreported()).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  expect(await loop.deployer.unreported()).toEqual([]);

  // Refused before it ran (a kk deploy on an agent without a store): failed, said so.
  api.queue.push({ attempt_id: 'da-3', deploy: { id: 'dep-3', node: 'nd-1', deploy_type: 'kk', command_type: 'deploy.kk', spec: { type: 'kk', project: 'p', app: 'a', version: 'v1', path: join(dir, 't') } } });
  await until('dep-3 refused', () => api.callbacks.find((c) => c.id === 'dep-3'));
  expect(api.callbacks.find((c) => c.id === 'dep-3')).toMatchObject({ attempt: 'da-3', status: 'failed', success: false, error: expect.stringMatching(/needs a store/) });
  expect(api.reports.find((r) => r.id === 'dep-3')).toMatchObject({ status: 'failed', attempt: 'da-3' });
  await loop.stop();
  expect(loop.stats).toMatchObject({ deploys: 4, succeeded: 1, failed: 2 });
});
