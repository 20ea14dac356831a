// Seed 004 through the built `kk`: a list of stores a pull tries in order (the kk server, then
// the store directory behind it) and a request-rate limit on store reads. A pull whose server
// is down is served by the next store, says so in its result and on stderr, and deploys the
// version byte for byte; a version missing from the server is an answer, not an outage.
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KK_BIN, type Sandbox, cleanEnv, rsyncDifferences, sandbox, writeTree } from './helpers.js';

const ADMIN = 'kk-fallback-admin-token-0123456789abcdef';
let sb: Sandbox;
let server: ChildProcess | undefined;
let url = '';

function serve(store: string): Promise<string> {
  const child = spawn(process.execPath, [KK_BIN, 'serve', '--store', store, '--listen', '127.0.0.1:0'], {
    env: cleanEnv({ KK_ADMIN_TOKEN: ADMIN }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server = child;
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /\{[^\n]*"msg":"listening"[^\n]*\}/.exec(out);
      if (m) resolve((JSON.parse(m[0]) as { url: string }).url.replace(/\/$/, ''));
    });
    child.once('exit', (code) => reject(new Error(`kk serve exited ${code}: ${out}`)));
  });
}

async function stopServer(): Promise<void> {
  const s = server;
  server = undefined;
  if (!s || s.exitCode !== null || s.signalCode !== null) return;
  const exited = new Promise((r) => s.once('exit', r));
  s.kill('SIGTERM');
  await exited;
}

beforeAll(async () => {
  sb = await sandbox();
  await writeTree(sb.path('build'), { 'index.html': '<h1>v1</h1>\n', 'lib/app.js': 'console.log("fallback");\n'.repeat(2000), '中文/说明.txt': '部署\n' });
  await writeFile(sb.path('.kkartifact.yml'), 'ignore: []\n');
  url = await serve(sb.path('store'));
  const r = await sb.kk(['push', '--project', 'shop', '--app', 'web', '--version', '1.0.0', '--path', sb.path('build'), '--store', url, '--token', ADMIN, '--config', sb.path('.kkartifact.yml')]);
  expect(r.code, r.stderr).toBe(0);
});
afterAll(async () => {
  await stopServer();
  await sb?.cleanup();
});

const pullArgs = (target: string, extra: string[] = []) => ['pull', '--project', 'shop', '--app', 'web', '--version', '1.0.0', '--path', sb.path(target), '--token', ADMIN, '--config', sb.path('.kkartifact.yml'), ...extra];

describe('kk pull with fallback stores and a rate limit (seed 004)', () => {
  it('a healthy server serves the pull itself: no fallback in the result; reads under --rate-limit still deploy byte for byte', async () => {
    const r = await sb.kkJson(pullArgs('d1', ['--store', url, '--fallback-store', sb.path('store'), '--rate-limit', '50']));
    expect(r.code, r.stderr).toBe(0);
    expect(r.json.storeFallbacks).toEqual([]);
    expect(await rsyncDifferences(sb.path('build'), sb.path('d1'))).toBe('');
  });

  it('a version the server lacks is refused as NOT_FOUND without trying the next store', async () => {
    const r = await sb.kk([...pullArgs('d2', ['--store', url, '--fallback-store', sb.path('store')]).map((a) => (a === '1.0.0' ? '9.9.9' : a))]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/9\.9\.9/);
    expect(r.stderr).not.toMatch(/store fallback|using /);
  });

  it('with the server down, the store behind it serves the pull, and the result and stderr say so', async () => {
    await stopServer();
    const r = await sb.kkJson(pullArgs('d3', ['--store', url, '--fallback-store', sb.path('store')]));
    expect(r.code, r.stderr).toBe(0);
    expect(r.json.storeFallbacks).toHaveLength(1);
    expect(r.json.storeFallbacks[0].from.replace(/\/$/, '')).toBe(url);
    expect(r.json.storeFallbacks[0].to).toBe(sb.path('store'));
    expect(r.json.storeFallbacks[0].reason).toMatch(/kk server/);
    expect(r.stderr).toContain(`using ${sb.path('store')}`);
    expect(await rsyncDifferences(sb.path('build'), sb.path('d3'))).toBe('');
    // The same list from the config file (fallback_stores), rendered for people.
    await writeFile(sb.path('fb.yml'), `store: ${url}\nfallback_stores:\n  - ${sb.path('store')}\nrate_limit: 100\n`);
    const human = await sb.kk(['pull', '--project', 'shop', '--app', 'web', '--version', '1.0.0', '--path', sb.path('d4'), '--config', sb.path('fb.yml')]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/store fallback: .* failed \(.*\); served by /);
    expect(await rsyncDifferences(sb.path('build'), sb.path('d4'))).toBe('');
  });

  it('with every store down the pull fails naming the last one, the directory untouched', async () => {
    const r = await sb.kk(pullArgs('d3', ['--store', url, '--fallback-store', 'http://127.0.0.1:9']));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/127\.0\.0\.1:9/);
    expect(await rsyncDifferences(sb.path('build'), sb.path('d3'))).toBe('');
  });
});
