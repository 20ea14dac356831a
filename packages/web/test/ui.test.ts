// The web UI in a real Chromium against a real kk server on 127.0.0.1 (issue 17): sign in, find
// one of 2,000 projects by server-side search, open an app, promote and roll back through the
// confirm dialogs, and watch a real `kk agent`'s deploy directory follow while the page updates
// live (no reload); the audit entries appear. A pull token sees no Promote/Rollback/Delete and
// the API refuses them anyway. axe-core finds no serious violation; no CSP violation happens;
// screenshots of the main screens match the committed ones within a pixel tolerance.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentDeploys } from '@kk/agent';
import { createHasher } from '@kk/core';
import { type RunningServer, startServer } from '@kk/server';
import { WEB_DIR, ensureBuilt, launch, pixelDiff, watchProblems } from './browser.js';
import { FIXED_TIME, manyProjects, openFileStore, writeVersion } from './fixtures.js';

const ADMIN = 'admin-web-test-0123456789abcdef';
const KK_BIN = fileURLToPath(new URL('../../cli/bin/run.js', import.meta.url));
const AXE = fileURLToPath(new URL('../../../node_modules/axe-core/axe.min.js', import.meta.url));
const SHOTS = join(WEB_DIR, 'screenshots');
const FLEET_ENV = { KK_FLEET_HEARTBEAT_MS: '500', KK_FLEET_LEASE_MS: '5000', KK_FLEET_OFFLINE_MS: '5000', KK_FLEET_SWEEP_MS: '300' };
// The browser's clock is fixed a week after the fixtures' times: "created 7d ago" on every run.
const BROWSER_NOW = FIXED_TIME + 7 * 86_400_000;
// Screens compared with the committed screenshots: at most this share of pixels may differ.
const PIXEL_TOLERANCE = 0.02;

/** Playwright reads through the UI: give a loaded machine time (15 s) before failing. */
const poll = <T>(fn: () => Promise<T> | T) => expect.poll(fn, { timeout: 15_000, interval: 100 });

async function until<T>(what: string, ms: number, fn: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('web UI in Chromium against kk serve', () => {
  let root: string;
  let srv: RunningServer;
  let url: string;
  let browser: Browser;
  let agent: ChildProcess | undefined;
  let agentLog = '';
  let nodeId: string;
  const targetDir = () => join(root, 'target');
  const contexts: BrowserContext[] = [];
  let hook: Server;
  let hookUrl: string;
  const received: string[] = [];

  const api = async (method: string, path: string, body?: unknown, token = ADMIN) => {
    const r = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : undefined };
  };

  async function newPage(): Promise<{ page: Page; problems: string[] }> {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1, locale: 'en-US', timezoneId: 'UTC', colorScheme: 'light', reducedMotion: 'reduce' });
    contexts.push(ctx);
    const page = await ctx.newPage();
    await page.clock.setFixedTime(BROWSER_NOW);
    return { page, problems: watchProblems(page) };
  }

  async function signIn(page: Page, token: string) {
    await page.goto(`${url}/ui/`);
    await page.getByLabel('Token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
  }

  async function axe(page: Page, what: string) {
    // Injected over the DevTools protocol, which the page's CSP does not govern.
    await page.evaluate(await readFile(AXE, 'utf8'));
    const violations = await page.evaluate(async () => {
      const r = await (window as unknown as { axe: { run(ctx: Document, o: unknown): Promise<{ violations: { id: string; impact: string; help: string; nodes: { target: string[] }[] }[] }> } }).axe.run(document, { resultTypes: ['violations'] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
    });
    const serious = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    expect(serious, `${what}: ${JSON.stringify(serious, null, 1)}`).toEqual([]);
  }

  /** Compare with the committed screenshot (write it when KK_UPDATE_SCREENSHOTS=1 or absent outside CI). */
  async function screenshot(page: Page, name: string, volatile: string[] = []) {
    await page.evaluate(() => document.fonts.ready);
    const png = await page.screenshot({ fullPage: false, animations: 'disabled', caret: 'hide', mask: [page.locator(['time', '[data-volatile]', ...volatile].join(', '))], maskColor: '#c8ccd4' });
    const file = join(SHOTS, `${name}.png`);
    if (process.env.KK_UPDATE_SCREENSHOTS === '1' || (!existsSync(file) && process.env.CI !== 'true')) {
      await mkdir(SHOTS, { recursive: true });
      await writeFile(file, png);
      return;
    }
    const diff = await pixelDiff(browser, await readFile(file), png);
    const actual = join(tmpdir(), `kk-web-${name}.actual.png`);
    if (diff > PIXEL_TOLERANCE) await writeFile(actual, png);
    expect(diff, `${name}: ${(diff * 100).toFixed(2)}% of pixels differ from screenshots/${name}.png (see ${actual})`).toBeLessThanOrEqual(PIXEL_TOLERANCE);
  }

  beforeAll(async () => {
    ensureBuilt();
    root = await mkdtemp(join(tmpdir(), 'kk-web-test-'));
    const storeDir = join(root, 'store');
    const store = await openFileStore(storeDir);
    await manyProjects(store, 2000);
    // The app the test works on: three versions with real files, Chinese data in meta and paths.
    const files = (v: string) => ({ 'index.html': `<h1>商店 ${v}</h1>\n`, '文档/说明.txt': `版本 ${v}：发布说明\n`, 'assets/app.js': `console.log(${JSON.stringify(v)});\n`, [`only-${v}.txt`]: v });
    for (const [i, v] of ['v1', 'v2', 'v3'].entries()) {
      await writeVersion(store, 'shop-0421', 'web', v, files(v), { created: new Date(FIXED_TIME + i * 3_600_000).toISOString(), meta: { description: `商店前端 ${v}`, owner: '运维组' }, git: `${'0123456789abcdef'.repeat(2)}${v}`.slice(0, 40) });
    }
    await store.setChannel('shop-0421', 'web', 'promoted', 'v1', 'ci');
    await store.flush();
    await store.driver.close();
    Object.assign(process.env, FLEET_ENV);
    srv = await startServer({ store: storeDir, listen: '127.0.0.1:0', adminToken: ADMIN, log: false, config: { hasherThreads: 1, webhookPollMs: 100, webhookBackoffMs: 50, webhookBackoffMaxMs: 200 } });
    // A webhook receiver: the exact bodies it was sent.
    hook = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        received.push(body);
        res.end('ok');
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', () => r()));
    hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/kk`;
    url = srv.url;
    // The first listing reads every project's first-seen time once; later ones come from memory.
    expect((await api('GET', '/projects?limit=1')).json.total).toBe(2001);
    browser = await launch();
  }, 120_000);

  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close();
    if (agent && agent.exitCode === null) {
      const gone = new Promise((r) => agent!.once('exit', r));
      agent.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
      if (agent.exitCode === null) agent.kill('SIGKILL');
    }
    await srv?.close();
    await new Promise((r) => (hook ? hook.close(r) : r(undefined)));
    if (root) await rm(root, { recursive: true, force: true });
  }, 60_000);

  it('sign in, search 2,000 projects, promote and roll back with a real agent following, live and audited', async () => {
    // A real kk agent on this machine, following shop-0421/web's promoted channel.
    const reg = await api('POST', '/api/sync/registration-tokens', { expires: '1h' });
    expect(reg.status).toBe(201);
    agent = spawn(process.execPath, [KK_BIN, 'agent', '--server', url, '--name', 'web-01', '--tags', 'role=web', '--state-dir', join(root, 'agent'), '--registration-token', reg.json.token, '--poll-wait', '2'], {
      env: { ...process.env, KK_STATE_DIR: join(root, 'agent', 'kk') },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    agent.stderr!.on('data', (d: Buffer) => (agentLog += d.toString()));
    const node = await until('the agent online', 30_000, async () => (await api('GET', '/api/sync/nodes')).json.items.find((n: { name: string; status: string }) => n.name === 'web-01' && n.status === 'ONLINE'));
    nodeId = node.id;
    const target = await api('POST', '/api/sync/targets', { project: 'shop-0421', app: 'web', node: 'web-01', path: targetDir() });
    expect(target.status).toBe(201);
    expect((await api('POST', '/api/sync/sync', { target: target.json.id })).status).toBe(200);
    await until(`v1 in the target (agent log: ${agentLog.slice(-400)})`, 30_000, async () => (await readFile(join(targetDir(), 'only-v1.txt'), 'utf8')) === 'v1');

    const { page, problems } = await newPage();
    await signIn(page, ADMIN);
    expect(await page.evaluate(() => [location.href, sessionStorage.getItem('kk.token')])).toEqual([`${url}/ui/`, ADMIN]);
    await until('the live stream', 15_000, async () => (await page.getByTestId('live').textContent()) === 'live');
    await axe(page, 'overview');

    // Projects: 2,000 in total, virtual-scrolled (far fewer rows in the DOM), server-side search.
    await page.getByRole('link', { name: 'Projects' }).click();
    await poll(() => page.getByTestId('project-count').textContent()).toBe('2001 in total');
    expect(await page.locator('.vlist [role=listitem]').count()).toBeLessThan(100);
    await page.getByLabel('Search projects').fill('shop-04');
    await poll(() => page.getByTestId('project-count').textContent()).toBe('1 matching');
    expect(page.url()).toContain('#/projects?q=shop-04');
    await axe(page, 'projects');
    await page.getByRole('link', { name: 'shop-0421' }).click();
    await page.getByRole('link', { name: 'web', exact: true }).click();
    await page.getByTestId('version-v3').waitFor();
    expect(page.url()).toBe(`${url}/ui/#/apps/shop-0421/web`);
    await poll(() => page.getByTestId('target-version').textContent()).toBe('v1');
    await axe(page, 'app');
    // A marker that a reload would lose: everything below must arrive live.
    await page.evaluate(() => ((window as unknown as { __same: number }).__same = 1));

    // Promote v3: the confirm names exactly what changes.
    await page.getByTestId('version-v3').getByRole('button', { name: 'Promote' }).click();
    const dialog = page.getByRole('dialog');
    expect((await dialog.getByTestId('confirm-change').textContent())!.replace(/\s+/g, ' ').trim()).toMatch(/^Channel promoted of shop-0421\/web moves from v1 \(manifest [0-9a-f]{12}\) to v3 \(manifest [0-9a-f]{12}\)\.$/);
    await poll(() => dialog.textContent()).toContain(`web-01:${targetDir()}`);
    await axe(page, 'promote dialog');
    await dialog.getByRole('button', { name: 'Promote v3' }).click();
    await poll(() => page.getByTestId('channel-promoted').getByTestId('channel-version').textContent()).toBe('v3');
    // The agent applies v3; the page shows it without a reload.
    await until('v3 in the target', 30_000, async () => (await readFile(join(targetDir(), 'only-v3.txt'), 'utf8')) === 'v3' && !existsSync(join(targetDir(), 'only-v1.txt')));
    expect(await readFile(join(targetDir(), '文档', '说明.txt'), 'utf8')).toBe('版本 v3：发布说明\n');
    await poll(() => page.getByTestId('target-version').textContent()).toBe('v3');

    // Roll back: back to v1, named in the confirm.
    await page.getByTestId('channel-promoted').getByRole('button', { name: 'Rollback' }).click();
    expect((await dialog.getByTestId('confirm-change').textContent())!.replace(/\s+/g, ' ')).toContain('moves from v3 (manifest');
    expect((await dialog.getByTestId('confirm-change').textContent())!.replace(/\s+/g, ' ')).toContain('to v1 (manifest');
    await dialog.getByRole('button', { name: 'Roll back to v1' }).click();
    await poll(() => page.getByTestId('channel-promoted').getByTestId('channel-version').textContent()).toBe('v1');
    await until('v1 back in the target', 30_000, async () => (await readFile(join(targetDir(), 'only-v1.txt'), 'utf8')) === 'v1' && !existsSync(join(targetDir(), 'only-v3.txt')));
    await poll(() => page.getByTestId('target-version').textContent()).toBe('v1');

    // Someone else promotes v2 (another client): the open page follows live.
    expect((await api('POST', '/api/v1/promote', { project: 'shop-0421', app: 'web', version: 'v2' })).status).toBe(200);
    await poll(() => page.getByTestId('channel-promoted').getByTestId('channel-version').textContent()).toBe('v2');
    await until('v2 in the target', 30_000, async () => (await readFile(join(targetDir(), 'only-v2.txt'), 'utf8')) === 'v2');
    await poll(() => page.getByTestId('target-version').textContent()).toBe('v2');
    expect(await page.evaluate(() => (window as unknown as { __same?: number }).__same)).toBe(1);
    await page.getByTestId('channel-promoted').getByRole('button', { name: /History/ }).click();
    await poll(() => page.locator('ol.history li').allTextContents()).toEqual([expect.stringContaining('v2 since'), expect.stringContaining('v1 from'), expect.stringContaining('v3 from'), expect.stringContaining('v1 from')]);
    await screenshot(page, 'app');

    // The audit log shows the promote and the rollback; a new promote appears without a reload.
    await page.getByRole('link', { name: 'Audit' }).click();
    const rows = () => page.getByTestId('audit').locator('tbody tr').allTextContents();
    const moves = async () => (await rows()).filter((r) => r.includes('shop-0421/web') && /promote|rollback/.test(r));
    await poll(async () => (await moves()).slice(0, 3).map((r) => /(promote|rollback)/.exec(r)?.[1])).toEqual(['promote', 'rollback', 'promote']);
    expect(await page.evaluate(() => (window as unknown as { __same?: number }).__same)).toBe(1);
    expect((await api('POST', '/api/v1/promote', { project: 'shop-0421', app: 'web', version: 'v3' })).status).toBe(200);
    await poll(async () => (await moves())[0]).toMatch(/promote.*shop-0421\/web.*v3/);
    await axe(page, 'audit');
    // Filters live in the query string: a link to the rollbacks of this app.
    await page.goto(`${url}/ui/#/audit?action=rollback&project=shop-0421`);
    await poll(async () => (await rows()).map((r) => /rollback/.test(r) && r.includes('shop-0421/web'))).toEqual([true]);
    expect(await page.getByLabel('action').inputValue()).toBe('rollback');

    // Webhooks: created in the UI, a delivery with its body, redelivered.
    await page.getByRole('link', { name: 'Webhooks' }).click();
    await page.getByLabel('Name').fill('receiver');
    await page.getByLabel('URL').fill(hookUrl);
    await page.getByLabel('Events').fill('promote');
    await page.getByRole('button', { name: 'Create webhook' }).click();
    await page.getByRole('button', { name: 'Deliveries' }).click();
    expect((await api('POST', '/api/v1/promote', { project: 'shop-0421', app: 'web', version: 'v3', channel: 'beta' })).status).toBe(200);
    await until('the delivery', 15_000, async () => received.length === 1);
    await poll(() => page.getByRole('cell', { name: 'delivered' }).count()).toBe(1);
    await page.getByRole('button', { name: 'Body' }).click();
    await poll(() => page.locator('tr.sub pre').textContent()).toContain('"channel":"beta"');
    await page.getByRole('button', { name: 'Redeliver' }).click();
    await until('the redelivery', 15_000, async () => received.length === 2);
    expect(received[1]).toBe(received[0]);
    // Ping: a signed test delivery to this webhook, listed with the others.
    await page.getByRole('button', { name: 'Ping' }).click();
    await until('the ping', 15_000, async () => received.length === 3);
    expect(JSON.parse(received[2]!)).toMatchObject({ type: 'ping' });
    await poll(() => page.getByRole('cell', { name: 'ping', exact: true }).count()).toBe(1);
    await axe(page, 'webhooks');

    // Version detail: meta.yaml with Chinese data, the diff against another version.
    await page.goto(`${url}/ui/#/apps/shop-0421/web/v3?tab=diff&against=v1`);
    await poll(() => page.getByTestId('diff-summary').textContent()).toBe('From v1 to v3: 1 added, 3 changed, 1 removed.');
    await page.getByRole('tab', { name: 'meta.yaml' }).click();
    await poll(() => page.getByTestId('meta-yaml').textContent()).toContain('path: 文档/说明.txt');
    expect(await page.getByTestId('version-meta').textContent()).toContain('description: 商店前端 v3');
    await axe(page, 'version');

    // Sync tasks of the app: filtered by the query string, the log drawer of one.
    await page.goto(`${url}/ui/#/tasks?project=shop-0421&status=SUCCESS`);
    await poll(async () => (await page.getByTestId('tasks').locator('tbody tr').count()) >= 4).toBe(true);
    await page.getByTestId('tasks').locator('tbody tr').first().getByRole('button', { name: 'Log' }).click();
    await poll(() => page.getByRole('complementary').textContent()).toContain('SUCCESS');
    expect(page.url()).toMatch(/[?&]task=/);
    await axe(page, 'tasks');

    // Nodes and the overview.
    await page.getByRole('link', { name: 'Nodes' }).click();
    await page.getByTestId('node-web-01').waitFor();
    await poll(() => page.getByTestId('node-web-01').textContent()).toContain('shop-0421/web');
    await axe(page, 'nodes');
    await screenshot(page, 'nodes');
    await page.getByTestId('node-web-01').getByRole('button', { name: 'Test connectivity' }).click();
    await poll(() => page.getByTestId('node-web-01').getByRole('status').textContent()).toMatch(/^reachable: heartbeat \d+ s ago$/);
    await page.getByRole('link', { name: 'Overview' }).click();
    await page.getByTestId('overview-nodes').getByText('all online').waitFor();
    // Which events come last depends on the agent's timing: their rows are masked.
    await screenshot(page, 'overview', ['[data-testid=events] tbody']);
    expect(problems).toEqual([]);
  });

  it('a deploy whose health check fails shows its stages live and ends with the rollback reason', async () => {
    // The kk agent process (kk agent) does not run deploys yet: the agent's own deploy loop runs
    // here, in this process, under the same node's identity (real HTTP to the real server).
    const identity = JSON.parse(await readFile(join(root, 'agent', 'agent.json'), 'utf8')) as { node: string; token: string };
    expect(identity.node).toBe(nodeId);
    const hasher = createHasher({ threads: 1 });
    const loop = agentDeploys({ server: url, stateDir: join(root, 'deploy-agent'), hasher, pollWaitMs: 1000 });
    loop.start({ node: identity.node, token: identity.token });
    try {
      const app = join(root, 'app');
      await mkdir(app, { recursive: true });
      // Signed in before the deploy starts, so the page sees it from its first stage.
      const { page, problems } = await newPage();
      await signIn(page, ADMIN);
      const created = await api('POST', '/api/deploy/shell', {
        node: 'web-01',
        workdir: app,
        script: `echo "部署 v2: starting"; sleep 3; echo unhealthy > '${app}/state'; echo "v2 installed"`,
        rollback_script: `echo healthy > '${app}/state'; echo "restored the previous release"`,
        health: { type: 'script', script: `grep -qx healthy '${app}/state' || { echo "state is $(cat '${app}/state')" >&2; exit 1; }`, retries: 1, interval_ms: 300, timeout_ms: 5000 },
      });
      expect(created.status, JSON.stringify(created.json)).toBe(202);
      const id = created.json.id as string;
      await page.goto(`${url}/ui/#/deploys/${id}`);
      await page.getByTestId('deploy-status').waitFor();
      await page.evaluate(() => ((window as unknown as { __same: number }).__same = 1));
      const seen = new Set<string>();
      await until('the deploy to end', 60_000, async () => {
        const st = (await page.getByTestId('deploy-status').textContent()) ?? '';
        seen.add(st);
        // (`failed` comes before the automatic rollback: not an end here.)
        return ['rolled_back', 'rollback_failed', 'success'].includes(st);
      });
      expect(await page.getByTestId('deploy-status').textContent(), JSON.stringify((await api('GET', `/api/deploy/${id}`)).json)).toBe('rolled_back');
      // It was seen running before it ended, on the same page (no reload).
      expect([...seen].some((s) => !['rolled_back'].includes(s)), [...seen].join(',')).toBe(true);
      expect(await page.evaluate(() => (window as unknown as { __same?: number }).__same)).toBe(1);
      const stages = await page.getByTestId('deploy-stages').locator('li .badge').allTextContents();
      expect(stages).toEqual(expect.arrayContaining(['executing', 'health_check', 'rolling_back', 'rolled_back']));
      await poll(() => page.getByTestId('deploy-reason').textContent()).toMatch(/Rolled back automatically/);
      await poll(() => page.getByTestId('deploy-log').textContent()).toContain('部署 v2: starting');
      await axe(page, 'deploy');
      await screenshot(page, 'deploy');
      expect(problems).toEqual([]);
    } finally {
      await loop.stop();
      await hasher.close();
    }
  });

  it('a pull token sees no Promote, Rollback or Delete, and the API refuses them anyway', async () => {
    // An admin creates the pull token in the Tokens view: its secret is shown once.
    const admin = await newPage();
    await signIn(admin.page, ADMIN);
    await admin.page.getByRole('link', { name: 'Tokens' }).click();
    await admin.page.getByLabel('Name').fill('只读令牌');
    await admin.page.getByRole('button', { name: 'Create token' }).click();
    const pull = (await admin.page.getByTestId('new-secret').inputValue()).trim();
    expect(pull).toMatch(/^kk_/);
    const tokenId = (await api('GET', '/api/v1/tokens?limit=500')).json.items.find((t: { name: string }) => t.name === '只读令牌').id as string;
    await poll(() => admin.page.getByTestId(`token-${tokenId}`).textContent()).toContain('pull');
    await axe(admin.page, 'tokens');

    const { page, problems } = await newPage();
    await signIn(page, pull);
    expect(await page.getByRole('navigation', { name: 'Main' }).getByRole('link').allTextContents()).toEqual(['Overview', 'Projects']);
    await page.goto(`${url}/ui/#/apps/shop-0421/web`);
    await page.getByTestId('version-v3').waitFor();
    await page.getByTestId('channel-promoted').waitFor();
    for (const name of ['Promote', 'Rollback', 'Delete']) expect(await page.getByRole('button', { name }).count(), name).toBe(0);
    // The same calls made from the page with its token are refused by the server.
    const statuses = await page.evaluate(async () => {
      const h = { authorization: `Bearer ${sessionStorage.getItem('kk.token')}`, 'content-type': 'application/json' };
      const body = JSON.stringify({ project: 'shop-0421', app: 'web', version: 'v1' });
      return [
        (await fetch('/api/v1/promote', { method: 'POST', headers: h, body })).status,
        (await fetch('/api/v1/rollback', { method: 'POST', headers: h, body })).status,
        (await fetch('/api/v1/projects/shop-0421/apps/web/versions/v1', { method: 'DELETE', headers: h })).status,
      ];
    });
    expect(statuses).toEqual([403, 403, 403]);
    await axe(page, 'app (pull token)');

    // Revoked in the Tokens view: the pull token's tab is signed out on its next request.
    await admin.page.getByTestId(`token-${tokenId}`).getByRole('button', { name: 'Revoke' }).click();
    await admin.page.getByRole('dialog').getByRole('button', { name: 'Revoke' }).click();
    await poll(() => admin.page.getByTestId(`token-${tokenId}`).textContent()).toContain('revoked');
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Projects' }).click();
    await poll(() => page.getByRole('status').first().textContent()).toContain('no longer accepts this token');
    expect(await page.evaluate(() => sessionStorage.getItem('kk.token'))).toBe(null);
    expect([...problems, ...admin.problems]).toEqual([]);
  });
});
