// Deploys end to end (issue 13 acceptance 1, 4 and 6) through real processes: a real `kk serve`,
// a real `kk agent` and the real CLI (`kk deploy ... --wait --json`).
// 1. kk deploy of v1 (healthy), then v2 whose HTTP health check fails (the post hook starts the
//    server that answers it): executing -> health_check -> rolling_back -> health_check ->
//    rolled_back, the directory holds v1 byte for byte, the callback arrives at a test HTTP
//    server signed (HMAC-SHA256 of the exact body) with the seed's payload fields, and v2 is
//    marked bad (a new deploy of it is refused).
// 4. shell with a script that sleeps past --timeout: timeout, then the rollback script ran.
// 6. two deploys to one node at once: one 202, one 409 naming the active deploy.
// 5. the agent SIGKILLed during a deploy's health check finishes it when it is back.
// 3. tar: a 300 MB .tar.gz (incompressible content, gzip level 0: cheap to make) uploaded through
//    the store; the first upload is SIGKILLed halfway, the second sends only the chunks the store
//    lacks (counted against the store); progress 0 -> 30 -> 60 -> 90 -> 100; the tree byte-exact.
//    (Hostile archives are refused before anything is written: packages/agent/test/deploy-kinds.)
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { open, readFile, rm, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { type IncomingHttpHeaders, createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store, type Digest } from '@kk/core';
import { openDriver } from '@kk/drivers';
import { KK_BIN, type Sandbox, cleanEnv, rsyncDifferences, sandbox, spawnServe, writeRandomFile, writeTree } from './helpers.js';

const admin = `admin-${randomBytes(12).toString('hex')}`;
const secret = `cb-${randomBytes(12).toString('hex')}`;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function until<T>(what: string, ms: number, fn: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A ustar header block. */
function tarHeader(name: string, size: number, type: '0' | '5', mode: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100);
  h.write(`${mode.toString(8).padStart(7, '0')}\0`, 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  h.write(`${Math.floor(Date.now() / 1000).toString(8).padStart(11, '0')}\0`, 136);
  h.write('        ', 148);
  h.write(type, 156);
  h.write('ustar\u000000', 257);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return h;
}

/** `out`: a .tar.gz of app/ with `big` (a file already on disk) and a small one, gzip level 0; resolves big's sha256. */
async function makeTarGz(out: string, big: string): Promise<string> {
  const size = (await stat(big)).size;
  const bigHash = createHash('sha256');
  async function* tar() {
    yield tarHeader('app/', 0, '5', 0o755);
    yield tarHeader('app/big.bin', size, '0', 0o644);
    for await (const c of createReadStream(big, { highWaterMark: 1024 * 1024 })) {
      bigHash.update(c as Buffer);
      yield c as Buffer;
    }
    yield Buffer.alloc((512 - (size % 512)) % 512);
    const small = Buffer.from('hello from the archive\n');
    yield tarHeader('app/hello.txt', small.length, '0', 0o644);
    yield Buffer.concat([small, Buffer.alloc(512 - small.length)]);
    yield Buffer.alloc(1024);
  }
  await pipeline(tar, createGzip({ level: 0 }), createWriteStream(out));
  return bigHash.digest('hex');
}

async function sha256Of(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(c as Buffer);
  return h.digest('hex');
}

/** The upload's chunk digests as kk computes them (1 MiB pieces). */
async function chunkDigests(file: string): Promise<Digest[]> {
  const fh = await open(file, 'r');
  const out: Digest[] = [];
  const buf = Buffer.alloc(1024 * 1024);
  try {
    for (let off = 0; ; off += buf.length) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, off);
      if (!bytesRead) break;
      out.push(`sha256:${createHash('sha256').update(buf.subarray(0, bytesRead)).digest('hex')}` as Digest);
    }
  } finally {
    await fh.close();
  }
  return out;
}

/** Whether `want` appears in `seq` in order (other entries may come between). */
function inOrder(seq: string[], want: string[]): boolean {
  let i = 0;
  for (const s of seq) if (s === want[i]) i++;
  return i === want.length;
}

describe('deploys: kk serve + kk agent + kk deploy', () => {
  let sb: Sandbox;
  let url: string;
  let server: ChildProcess | undefined;
  let agent: ChildProcess | undefined;
  let agentLog = '';
  const callbacks: { headers: IncomingHttpHeaders; body: string }[] = [];
  const receiver = createHttpServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      callbacks.push({ headers: req.headers, body: Buffer.concat(parts).toString('utf8') });
      res.writeHead(204).end();
    });
  });
  let callbackUrl: string;
  let healthPort: number;

  const stop = (child: ChildProcess | undefined, signal: NodeJS.Signals) =>
    new Promise<void>((resolve) => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill(signal);
    });
  const startAgent = (registrationToken?: string) => {
    agent = spawn(process.execPath, [KK_BIN, 'agent', '--server', url, '--name', 'd1', '--state-dir', sb.path('agent'), '--poll-wait', '2', ...(registrationToken ? ['--registration-token', registrationToken] : [])], {
      cwd: sb.root,
      env: cleanEnv({ KK_STATE_DIR: sb.path('agent', 'kk') }),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    agent.stderr!.on('data', (d: Buffer) => (agentLog += d.toString()));
  };
  const api = async (path: string) => (await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${admin}` } })).json() as Promise<Record<string, any>>;
  const server_ = (args: string[]) => ['--server', url, '--token', admin, ...args];

  beforeAll(async () => {
    sb = await sandbox();
    const port = await freePort();
    healthPort = await freePort();
    url = `http://127.0.0.1:${port}`;
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
    callbackUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/deploy-done`;
    await writeTree(sb.path('builds', 'v1'), { 'index.html': 'v1 healthy', 'app.js': 'one', 'lib/util.js': 'u1' });
    await writeTree(sb.path('builds', 'v2'), { 'index.html': 'v2 broken', 'app.js': 'two', 'new.js': 'only in v2' });
    await writeTree(sb.root, { 'server.yml': `webhook_secret: ${secret}\nwebhook_poll: 200ms\n` });
    server = await spawnServe(['--store', sb.path('store'), '--listen', `127.0.0.1:${port}`, '--config', sb.path('server.yml')], {
      cwd: sb.root,
      env: cleanEnv({ KK_ADMIN_TOKEN: admin, KK_STATE_DIR: sb.stateDir, KK_FLEET_HEARTBEAT_MS: '1000', KK_FLEET_SWEEP_MS: '500' }),
    });
    await writeTree(sb.path('ci'), { '.kkartifact.yml': `server_url: ${url}\ntoken: ${admin}\n` });
    for (const v of ['v1', 'v2']) {
      const r = await sb.kk(['push', '-p', 'shop', '-a', 'web', '--version', v, '--path', sb.path('builds', v)], { cwd: sb.path('ci') });
      expect(r.code, r.stderr).toBe(0);
    }
    const t = await sb.kk(['node', 'token', 'create', ...server_(['--expires', '1h'])]);
    expect(t.code, t.stderr).toBe(0);
    startAgent(t.stdout.trim());
    await until('the agent enrolled', 30_000, async () => existsSync(sb.path('agent', 'agent.json')));
  }, 120_000);

  afterAll(async () => {
    await stop(agent, 'SIGKILL');
    await stop(server, 'SIGKILL');
    const pid = sb && existsSync(sb.path('health.pid')) ? Number(await readFile(sb.path('health.pid'), 'utf8')) : 0;
    if (pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await new Promise<void>((r) => receiver.close(() => r()));
    await sb?.cleanup();
  });

  it('acceptance 1: a kk deploy of v2 whose health check fails rolls back to v1 byte for byte; signed callback; v2 marked bad', async () => {
    // The post hook starts (once) the app's HTTP server: 200 while index.html says healthy, 500 otherwise.
    const app = `require('http').createServer((q, s) => { const b = require('fs').readFileSync('index.html', 'utf8'); s.writeHead(b.includes('healthy') ? 200 : 500).end(b); }).listen(${healthPort}, '127.0.0.1')`;
    await writeTree(sb.root, {
      'post.sh': `if ! { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }; then nohup "$NODE" -e "${app.replace(/"/g, '\\"')}" >/dev/null 2>&1 & echo $! > "$PIDFILE"; fi\n`,
    });
    const target = sb.path('srv', 'web');
    const common = ['--node', 'd1', '-p', 'shop', '-a', 'web', '--path', target, '--post', sb.path('post.sh'), '--env', `NODE=${process.execPath}`, '--env', `PIDFILE=${sb.path('health.pid')}`];
    const health = (retries: number) => ['--health', `http://127.0.0.1:${healthPort}/`, '--health-retries', String(retries), '--health-interval', '200ms', '--health-timeout', '5s'];
    const v1 = await sb.kkJson(['deploy', 'kk', ...server_([...common, '--version', 'v1', ...health(10), '--wait'])]);
    expect(v1.code, `${v1.stderr}\n${agentLog}`).toBe(0);
    expect(v1.json).toMatchObject({ status: 'success', version: 'v1', progress: 100, active: false });

    const v2 = await sb.kkJson(['deploy', 'kk', ...server_([...common, '--version', 'v2', ...health(1), '--callback-url', callbackUrl, '--wait'])]);
    expect(v2.code, v2.stderr).toBe(1);
    expect(v2.json).toMatchObject({ status: 'rolled_back', version: 'v2', active: false, result: { bad_version: 'v2', health_check: { success: false, check_type: 'http', status_code: 500 }, rollback: { success: true, to: 'v1' } } });
    // --wait printed the stages as they were recorded.
    expect(v2.stderr).toMatch(/health_check/);
    const st = await sb.kkJson(['deploy', 'status', v2.json.id, ...server_([])]);
    const statuses = st.json.history.map((h: { status: string }) => h.status);
    expect(inOrder(statuses, ['pending', 'executing', 'health_check', 'rolling_back', 'health_check', 'rolled_back']), statuses.join(' ')).toBe(true);
    expect(await rsyncDifferences(sb.path('builds', 'v1'), target)).toBe('');
    expect(await (await fetch(`http://127.0.0.1:${healthPort}/`)).text()).toBe('v1 healthy');

    const cb = await until('the callback', 20_000, async () => callbacks.find((c) => JSON.parse(c.body).callback_id === v2.json.id));
    expect(cb.headers['x-kk-signature-256']).toBe(`sha256=${createHmac('sha256', secret).update(cb.body).digest('hex')}`);
    const payload = JSON.parse(cb.body);
    expect(Object.keys(payload).sort()).toEqual(['callback_id', 'command_type', 'deploy_type', 'duration', 'error', 'result', 'status', 'success', 'timestamp']);
    expect(payload).toMatchObject({ callback_id: v2.json.id, command_type: 'deploy.kk', deploy_type: 'kk', status: 'rolled_back', success: false, error: expect.stringMatching(/health check failed/) });

    // v2 is bad for this directory now.
    const again = await sb.kkJson(['deploy', 'kk', ...server_([...common, '--version', 'v2'])]);
    expect(again.code).toBe(2);
    expect(again.json.error.message).toMatch(/v2 is marked bad/);
    const list = await sb.kkJson(['deploy', 'list', ...server_(['--node', 'd1'])]);
    expect(list.json.items.map((d: { id: string }) => d.id)).toEqual([v2.json.id, v1.json.id]);
  }, 120_000);

  it('acceptance 4 and 6: a shell script past its timeout is rolled back by its rollback script; a second deploy to a busy node is 409 naming the active one', async () => {
    await writeTree(sb.root, { 'slow.sh': 'echo started\nsleep 30\necho never\n', 'undo.sh': `echo undone > ${sb.path('undone.txt')}\n` });
    // Two at once: whichever the server takes first is active; the other is refused naming it.
    const [a, b] = await Promise.all(
      ['a', 'b'].map((n) => sb.kkJson(['deploy', 'shell', ...server_(['--node', 'd1', '--script', sb.path('slow.sh'), '--rollback-script', sb.path('undo.sh'), '--timeout', '3s', '--idempotency-key', `two-${n}`])])),
    );
    const won = [a!, b!].find((r) => r.code === 0)!;
    const lost = [a!, b!].find((r) => r.code !== 0)!;
    expect(won, `${a!.stdout}\n${b!.stdout}`).toBeDefined();
    expect(lost, `${a!.stdout}\n${b!.stdout}`).toBeDefined();
    expect(won.json).toMatchObject({ status: 'pending', command_type: 'deploy.shell', location: `/api/deploy/${won.json.id}` });
    expect(lost.code).toBe(4);
    expect(lost.json.error).toMatchObject({ code: 'LOCKED', details: { status: 409, active: won.json.id } });

    // --follow exits 1: the deploy did not succeed (it was rolled back).
    const done = await sb.kkJson(['deploy', 'status', won.json.id, '--follow', ...server_([])]);
    expect(done.code, `${done.stderr}\n${agentLog}`).toBe(1);
    expect(done.json).toMatchObject({ status: 'rolled_back', error_code: 'TIMEOUT', result: { rollback: { success: true } } });
    const history = await sb.kkJson(['deploy', 'status', won.json.id, '--logs', ...server_([])]);
    const statuses = history.json.history.map((h: { status: string }) => h.status);
    expect(inOrder(statuses, ['pending', 'executing', 'script_running', 'timeout', 'rolling_back', 'rolled_back']), statuses.join(' ')).toBe(true);
    expect(history.json.logs.map((l: { line: string }) => l.line).join('\n')).toMatch(/stdout: started/);
    expect(await readFile(sb.path('undone.txt'), 'utf8')).toBe('undone\n');
  }, 120_000);
  it('acceptance 3: a 300 MB tar.gz through the store, killed halfway and resumed (only the missing chunks sent), progress 0 -> 30 -> 60 -> 90 -> 100', async () => {
    const t0 = Date.now();
    const mark = (what: string) => process.env.KK_E2E_TIMES && console.log(`tar ${what}: ${Date.now() - t0} ms`);
    await writeRandomFile(sb.path('tar', 'big.bin'), 300 * 1024 * 1024, 'deploy-tar');
    const archive = sb.path('tar', 'app.tar.gz');
    const bigSha = await makeTarGz(archive, sb.path('tar', 'big.bin'));
    await rm(sb.path('tar', 'big.bin'));
    const digests = await chunkDigests(archive);
    mark('archive made');
    expect(digests.length).toBeGreaterThanOrEqual(300);
    const target = sb.path('srv', 'tarapp');
    await writeTree(sb.root, { 'install.sh': 'echo installed > installed.txt\n' });
    const args = ['deploy', 'tar', ...server_(['--node', 'd1', '--file', archive, '--path', target, '--install-script', sb.path('install.sh'), '--health', `script:test -f ${target}/app/hello.txt`])];

    // First try: SIGKILL once the upload is well under way.
    const first = spawn(process.execPath, [KK_BIN, ...args, '--json'], { cwd: sb.root, env: cleanEnv({ KK_STATE_DIR: sb.stateDir }), stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    await new Promise<void>((resolve, reject) => {
      first.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        const m = [...err.matchAll(/uploading app\.tar\.gz: (\d+)%/g)].pop();
        if (m && Number(m[1]) >= 20) {
          first.kill('SIGKILL');
          resolve();
        }
      });
      first.once('exit', () => reject(new Error(`the upload ended before it could be killed:\n${err}`)));
    });
    if (first.exitCode === null && first.signalCode === null) await new Promise((r) => first.once('exit', r));
    mark('first upload killed');
    const store = await Store.open(await openDriver(url, { token: admin }));
    const missing = (await store.missingChunks(digests)).length;
    expect(missing).toBeGreaterThan(0);
    expect(missing).toBeLessThan(digests.length);

    // Second try: only the missing chunks go; then the deploy runs to success.
    const r = await sb.kkJson([...args, '--wait']);
    mark('deployed');
    expect(r.code, `${r.stderr}\n${agentLog.split('\n').slice(-20).join('\n')}`).toBe(0);
    expect(r.json.upload).toMatchObject({ chunks: digests.length, sent: missing, size: (await stat(archive)).size });
    expect(r.json).toMatchObject({ status: 'success', deploy_type: 'tar', version: r.json.upload.sha256 });
    const h = (await sb.kkJson(['deploy', 'status', r.json.id, ...server_([])])).json.history as { status: string; progress: number }[];
    const at = (s: string) => h.find((e) => e.status === s)?.progress;
    expect([at('uploading'), at('extracting'), at('installing'), at('health_check'), at('success')]).toEqual([0, 30, 60, 90, 100]);
    expect(await sha256Of(`${target}/app/big.bin`)).toBe(bigSha);
    expect(await readFile(`${target}/app/hello.txt`, 'utf8')).toBe('hello from the archive\n');
    expect(await readFile(`${target}/installed.txt`, 'utf8')).toBe('installed\n');
    mark('checked');
  }, 360_000);
  it('acceptance 5: the agent SIGKILLed during the health check finishes the deploy on restart; the server record ends with its report', async () => {
    const marker = sb.path('healthy-now');
    await writeTree(sb.root, { 'ok.sh': 'echo deployed\n' });
    // Unhealthy until the marker exists; each probe takes a moment, so the kill lands inside the check.
    const r = await sb.kkJson(['deploy', 'shell', ...server_(['--node', 'd1', '--script', sb.path('ok.sh'), '--workdir', sb.root, '--health', `script:sleep 1; test -f ${marker}`, '--health-retries', '60', '--health-interval', '500ms', '--health-timeout', '2m'])]);
    expect(r.code, r.stderr).toBe(0);
    await until('the health check', 60_000, async () => (await api(`/api/deploy/${r.json.id}`)).status === 'health_check');
    await stop(agent, 'SIGKILL');
    await writeTree(sb.root, { 'healthy-now': 'yes' });
    startAgent();
    const done = await until('the deploy to end', 90_000, async () => {
      const d = await api(`/api/deploy/${r.json.id}`);
      return d.active === false ? d : undefined;
    });
    expect(done, agentLog.split('\n').slice(-20).join('\n')).toMatchObject({ status: 'success', result: { health_check: { success: true, check_type: 'script' } } });
    // The agent logs its recovery once recover() returns, which is after the server has the callback.
    const recoveredLine = new RegExp(`deploy ${r.json.id}: recovered after a restart, ended success`);
    await until('the agent to log its recovery', 30_000, async () => recoveredLine.test(agentLog) || undefined);
    expect(agentLog).toMatch(recoveredLine);
    const statuses = (await api(`/api/deploy/${r.json.id}/status`)).items.map((h: { status: string }) => h.status);
    expect(inOrder(statuses, ['pending', 'executing', 'script_running', 'health_check', 'success']), statuses.join(' ')).toBe(true);
  }, 180_000);
  it('kk deploy docker: the flags become the spec the agent runs (-p, -e, -v, --restart, --health tcp://)', async () => {
    const r = await sb.kkJson(['deploy', 'docker', ...server_(['--node', 'd1', '--image', '127.0.0.1:5000/shop/web:2', '--name', 'web', '-p', '8080:80', '-p', '127.0.0.1:8443:443/tcp', '-e', 'MODE=prod', '-v', '/srv/data:/data:ro', '--restart', 'unless-stopped', '--health', 'tcp://127.0.0.1:8080', '--health-retries', '0', '--no-rollback', '--insecure-registry'])]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({
      deploy_type: 'docker',
      target: 'docker:web',
      version: '127.0.0.1:5000/shop/web:2',
      spec: {
        type: 'docker',
        image: '127.0.0.1:5000/shop/web:2',
        name: 'web',
        ports: [{ host: 8080, container: 80 }, { host: 8443, container: 443, protocol: 'tcp', host_ip: '127.0.0.1' }],
        container_env: { MODE: 'prod' },
        volumes: ['/srv/data:/data:ro'],
        restart: 'unless-stopped',
        insecure: true,
        rollback: false,
        health: { type: 'tcp', host: '127.0.0.1', port: 8080, retries: 0 },
      },
    });
    // This machine's agent has no engine: the deploy fails (no rollback asked for) and says why.
    const done = await until('the docker deploy to end', 60_000, async () => {
      const d = await api(`/api/deploy/${r.json.id}`);
      return d.active === false ? d : undefined;
    });
    expect(done.status).toBe('failed');
    expect(done.error).toBeTruthy();
  }, 120_000);
});
