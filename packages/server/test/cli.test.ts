// `kk serve` and `kk token` end to end, with the built CLI (acceptance 2): push and pull round-trip
// a tree byte-exactly through `kk serve` with the seed's `server_url` and `token` in .kkartifact.yml.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from './helpers.js';

const KK_BIN = fileURLToPath(new URL('../../cli/bin/run.js', import.meta.url));

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['KK_STORE', 'KK_CONFIG', 'KK_TOKEN', 'KK_STATE_DIR', 'KK_ADMIN_TOKEN', 'KK_LISTEN', 'KK_SERVER', 'KK_SERVER_CONFIG']) delete e[k];
  return { ...e, ...extra };
}

function kk(args: string[], cwd: string, extra: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [KK_BIN, ...args], { cwd, env: env(extra), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

interface Serving {
  child: ChildProcessWithoutNullStreams;
  url: string;
  stderr: () => string;
  stop(): Promise<{ code: number | null; stdout: string }>;
}

/** Start `kk serve` and wait for its `listening` log line. */
function serve(args: string[], cwd: string, extra: Record<string, string> = {}): Promise<Serving> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [KK_BIN, 'serve', '--listen', '127.0.0.1:0', ...args], { cwd, env: env(extra) });
    let stdout = '';
    let stderr = '';
    const exited = new Promise<{ code: number | null; stdout: string }>((done) => child.on('close', (code) => done({ code, stdout })));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      for (const line of stdout.split('\n')) {
        if (!line.startsWith('{')) continue;
        const entry = JSON.parse(line) as { msg: string; url?: string };
        if (entry.msg === 'listening') {
          resolve({
            child,
            url: entry.url!,
            stderr: () => stderr,
            stop: () => {
              child.kill('SIGTERM');
              return exited;
            },
          });
        }
      }
    });
    void exited.then(({ code }) => reject(new Error(`kk serve exited ${code}: ${stderr}`)));
  });
}

async function tree(dir: string): Promise<Record<string, { mode: number; sha: string }>> {
  const out: Record<string, { mode: number; sha: string }> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const abs = path.join(e.parentPath, e.name);
    const { createHash } = await import('node:crypto');
    out[path.relative(dir, abs)] = { mode: (await stat(abs)).mode & 0o777, sha: createHash('sha256').update(await readFile(abs)).digest('hex') };
  }
  return out;
}

let root: string;
beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'kk-serve-e2e-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('kk serve', () => {
  it('push and pull round-trip a tree byte-exactly with server_url and token in .kkartifact.yml', async () => {
    const admin = `admin-${randomBytes(12).toString('hex')}`;
    const s = await serve(['--store', path.join(root, 'data')], root, { KK_ADMIN_TOKEN: admin });
    try {
      const created = await kk(['token', 'create', '--server', s.url, '--token', admin, '--scope', 'project:shop', '--permissions', 'push,pull', '--expires', '30d', '--json'], root);
      expect(created.code, created.stderr).toBe(0);
      const { token, scope, permissions } = JSON.parse(created.stdout);
      expect(token).toMatch(/^kk_/);
      expect([scope, permissions]).toEqual(['project:shop', ['pull', 'push']]);

      const src = path.join(root, 'build');
      await mkdir(path.join(src, 'bin'), { recursive: true });
      await mkdir(path.join(src, 'config', 'deep'), { recursive: true });
      await writeFile(path.join(src, 'bin', 'app'), randomBytes(5 * 1024 * 1024 + 3));
      await chmod(path.join(src, 'bin', 'app'), 0o755);
      await writeFile(path.join(src, 'config', 'app.yml'), 'port: 8080\n');
      await writeFile(path.join(src, 'config', 'deep', 'empty'), '');
      await writeFile(path.join(src, 'logs.log'), 'ignored');
      const work = path.join(root, 'work');
      await mkdir(work);
      await writeFile(path.join(work, '.kkartifact.yml'), `server_url: ${s.url}\ntoken: ${token}\nignore:\n  - '*.log'\n`);

      const pushed = await kk(['push', '--project', 'shop', '--app', 'web', '--version', '1.0.0', '--path', src, '--json'], work, { KK_STATE_DIR: path.join(root, 'state') });
      expect(pushed.code, pushed.stderr).toBe(0);
      expect(JSON.parse(pushed.stdout)).toMatchObject({ status: 'created', files: 3 });

      const dst = path.join(root, 'deploy');
      const pulled = await kk(['pull', '--project', 'shop', '--app', 'web', '--version', '1.0.0', '--path', dst, '--json'], work, { KK_STATE_DIR: path.join(root, 'state') });
      expect(pulled.code, pulled.stderr).toBe(0);
      const expected = await tree(src);
      delete expected['logs.log'];
      expect(await tree(dst)).toEqual(expected);

      // The server saw both, from the CLI's agent id.
      const audit = (await call(s.url, 'GET', '/api/v1/audit?project=shop', { token: admin })).json().items;
      expect(audit.map((e: { action: string }) => e.action)).toEqual(expect.arrayContaining(['push', 'pull']));
      expect(audit.find((e: { action: string }) => e.action === 'push').agent).toMatch(/^kk\//);

      // token list shows it; after revoke the same config is refused.
      const listed = await kk(['token', 'list', '--server', s.url, '--token', admin, '--json'], root);
      const id = JSON.parse(listed.stdout).tokens.find((t: { scope: string }) => t.scope === 'project:shop').id;
      const revoked = await kk(['token', 'revoke', id, '--server', s.url, '--token', admin, '--json'], root);
      expect(revoked.code, revoked.stderr).toBe(0);
      const refused = await kk(['push', '--project', 'shop', '--app', 'web', '--version', '1.0.1', '--path', src, '--json'], work, { KK_STATE_DIR: path.join(root, 'state') });
      expect(refused.code).not.toBe(0);
      expect(JSON.parse(refused.stdout).error.code).toBe('AUTH');

      // --token overrides the config's (revoked) token.
      const pullOnly = JSON.parse((await kk(['token', 'create', '--server', s.url, '--token', admin, '--scope', 'app:shop/web', '--permissions', 'pull', '--json'], root)).stdout).token;
      const dst2 = path.join(root, 'deploy-flag');
      const flagged = await kk(['pull', '--project', 'shop', '--app', 'web', '--version', '1.0.0', '--path', dst2, '--token', pullOnly, '--json'], work, { KK_STATE_DIR: path.join(root, 'state') });
      expect(flagged.code, flagged.stderr).toBe(0);
      expect(await tree(dst2)).toEqual(expected);
    } finally {
      const { code, stdout } = await s.stop();
      expect(code).toBe(0);
      expect(stdout).toContain('"msg":"request"');
    }
  });

  it('without KK_ADMIN_TOKEN the first start prints a one-time admin token, later starts do not', async () => {
    const dir = path.join(root, 'fresh');
    await mkdir(dir);
    const first = await serve([], dir);
    let adminToken: string;
    try {
      adminToken = /^(kk_\S+)$/m.exec(first.stderr())?.[1] ?? '';
      expect(adminToken).toMatch(/^kk_[0-9a-f]{20}_/);
      const who = await call(first.url, 'GET', '/api/v1/whoami', { token: adminToken });
      expect(who.json()).toMatchObject({ scope: 'global', permissions: ['admin'] });
      expect((await stat(path.join(dir, 'kk-data', 'kk-store.json'))).isFile()).toBe(true);
    } finally {
      await first.stop();
    }
    const second = await serve([], dir);
    try {
      expect(second.stderr()).not.toMatch(/kk_[0-9a-f]{20}_/);
      expect((await call(second.url, 'GET', '/projects', { token: adminToken })).status).toBe(200);
    } finally {
      await second.stop();
    }
  });

  // Issue 10 items 10 and 15: scripts read kk's stdout.
  it('serve writes nothing but JSON lines to stdout, stop included; chunk requests only at --log-level debug; token create prints the secret alone', async () => {
    const admin = `kk-test-admin-${randomBytes(8).toString('hex')}`;
    for (const level of ['info', 'debug']) {
      const s = await serve(['--store', path.join(root, `logs-${level}`), '--log-level', level], root, { KK_ADMIN_TOKEN: admin });
      let out: { code: number | null; stdout: string };
      let secret = '';
      try {
        const created = await kk(['token', 'create', '--server', s.url, '--token', admin, '--scope', 'project:logs', '--permissions', 'push,pull'], root);
        expect(created.code, created.stderr).toBe(0);
        expect(created.stdout).toMatch(/^kk_[0-9a-f]{20}_\S+\n$/);
        secret = created.stdout.trim();
        expect(created.stderr).toContain('shown once');
        const who = await call(s.url, 'GET', '/api/v1/whoami', { token: secret });
        expect(who.json().scope).toBe('project:logs');
        const work = path.join(root, `logs-work-${level}`);
        await mkdir(path.join(work, 'src'), { recursive: true });
        await writeFile(path.join(work, 'src', 'a.txt'), `chunk me ${level}`);
        await writeFile(path.join(work, '.kkartifact.yml'), `server_url: ${s.url}\ntoken: ${secret}\n`);
        const pushed = await kk(['push', '--project', 'logs', '--app', 'web', '--version', '1.0.0', '--path', path.join(work, 'src'), '--json'], work, { KK_STATE_DIR: path.join(root, 'state') });
        expect(pushed.code, pushed.stderr).toBe(0);
      } finally {
        out = await s.stop();
      }
      expect(out.code).toBe(0);
      const lines = out.stdout.split('\n').filter((l) => l !== '');
      const entries = lines.map((l) => JSON.parse(l) as { msg: string; level: string; route?: string });
      expect(entries.at(-1)).toMatchObject({ msg: 'stopped' });
      const chunkLines = entries.filter((e) => e.msg === 'request' && e.route?.startsWith('/api/v1/chunks'));
      if (level === 'info') {
        expect(chunkLines).toEqual([]);
        expect(entries.some((e) => e.msg === 'request' && e.route === '/api/v1/tokens')).toBe(true);
      } else {
        expect(chunkLines.length).toBeGreaterThan(0);
        expect(chunkLines.every((e) => e.level === 'debug')).toBe(true);
      }
    }
  });
});
