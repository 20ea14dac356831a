// Issue 6, acceptance 2, 3 and 4 through the built `kk`: push to s3:// and pull from it with no
// server and a separate state directory, two `kk serve` on one bucket, and `kk copy`
// file -> s3 -> file, all against s3rver.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createS3Driver } from '@kk/drivers/s3';
import { s3rverUnavailable, startS3rver } from '@kk/testkit';
import type { S3rverBackend } from '@kk/testkit';
import { KK_BIN, type Sandbox, cleanEnv, pseudoRandom, rsyncDifferences, sandbox, writeTree } from './helpers.js';

const unavailable = s3rverUnavailable();
const ADMIN_TOKEN = 'kk-e2e-admin-token-0123456789abcdef';

/** `kk serve` on a free port; resolves with its URL once it logs that it listens. */
function serve(store: string, env: Record<string, string>): Promise<{ url: string; child: ChildProcess; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [KK_BIN, 'serve', '--store', store, '--listen', '127.0.0.1:0'], {
    env: cleanEnv({ ...env, KK_ADMIN_TOKEN: ADMIN_TOKEN }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (b: Buffer) => {
      out += b.toString();
      for (const line of out.split('\n')) {
        const m = /^\{.*"msg":"listening".*\}$/.exec(line.trim());
        if (m) {
          child.stdout!.off('data', onData);
          child.stdout!.resume();
          resolve({ url: (JSON.parse(m[0]) as { url: string }).url.replace(/\/$/, ''), child, stop });
        }
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    child.once('exit', (code) => reject(new Error(`kk serve exited with ${code} before listening:\n${out}`)));
  });
}
if (unavailable && process.env.CI) throw new Error(`CI must run the s3 CLI tests: ${unavailable}`);

describe.skipIf(!!unavailable)(`kk with an s3:// store on s3rver, no server${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let s3: S3rverBackend;
  let sb: Sandbox;
  const kk = (args: string[], cwd?: string) => sb.kk(args, { env: s3.env, ...(cwd ? { cwd } : {}) });
  const kkJson = (args: string[], cwd?: string) => sb.kkJson(args, { env: s3.env, ...(cwd ? { cwd } : {}) });
  /** Chunk objects in the store under `prefix`, listed by a driver of the test's own. */
  const chunkObjects = async (prefix: string) => {
    const driver = createS3Driver(s3.driverOptions(prefix));
    let n = 0;
    for await (const _ of driver.list('chunks/')) n++;
    await driver.close();
    return n;
  };

  beforeAll(async () => {
    s3 = await startS3rver();
    sb = await sandbox();
  });
  afterAll(async () => {
    await sb?.cleanup();
    await s3?.stop();
  });

  it('pushes to s3:// and pulls on a second machine byte-exactly; a changed v2 uploads only its new chunks', async () => {
    const url = s3.storeUrl('cli-store');
    const build = sb.path('ci', 'build');
    await mkdir(sb.path('ci'), { recursive: true });
    await writeFile(sb.path('ci', '.kkartifact.yml'), `store: ${JSON.stringify(url)}\nchunk_size: 64KB\n`);
    const big = pseudoRandom(2 * 1024 * 1024, 'big');
    await writeTree(build, {
      'bin/server': { data: pseudoRandom(300 * 1024, 'server'), mode: 0o755 },
      'data/big.bin': big,
      'etc/app.conf': 'port = 8080\n',
      'etc/empty': '',
      'static/日本語.txt': 'unicode\n',
    });
    const seed = (cmd: 'push' | 'pull', version: string, path: string) => [cmd, '--project', 'shop', '--app', 'api', '--version', version, '--path', path, '--config', '.kkartifact.yml'];

    const p1 = await kkJson([...seed('push', '1.0.0', build), '--packs', 'none'], sb.path('ci'));
    expect(p1.code, p1.stderr).toBe(0);
    expect(p1.json).toMatchObject({ status: 'created', chunksUploaded: p1.json.chunks });
    expect(await chunkObjects('cli-store')).toBe(p1.json.chunks);

    // The second machine: its own config, its own state directory, the same bucket.
    await mkdir(sb.path('node2'), { recursive: true });
    await writeFile(sb.path('node2', '.kkartifact.yml'), `store: ${JSON.stringify(url)}\n`);
    const deploy = sb.path('node2', 'srv', 'api');
    const pull1 = await kk([...seed('pull', '1.0.0', deploy), '--state-dir', sb.path('node2', 'state')], sb.path('node2'));
    expect(pull1.code, pull1.stderr).toBe(0);
    expect(await rsyncDifferences(build, deploy)).toBe('');

    big.fill(1, 1024 * 1024, 1024 * 1024 + 4096);
    await writeTree(build, { 'data/big.bin': big, 'etc/app.conf': 'port = 9090\n' });
    const p2 = await kkJson(seed('push', '1.1.0', build), sb.path('ci'));
    expect(p2.code, p2.stderr).toBe(0);
    expect(p2.json.chunksUploaded).toBeGreaterThan(0);
    expect(p2.json.chunksUploaded).toBeLessThan(p2.json.chunks / 4);
    expect(await chunkObjects('cli-store')).toBe(p1.json.chunks + p2.json.chunksUploaded);

    const pull2 = await kkJson([...seed('pull', 'latest', deploy), '--state-dir', sb.path('node2', 'state')], sb.path('node2'));
    expect(pull2.code, pull2.stderr).toBe(0);
    expect(pull2.json).toMatchObject({ version: '1.1.0', previous: '1.0.0' });
    expect(await rsyncDifferences(build, deploy)).toBe('');
  });

  it('two kk serve on one bucket: a version pushed through one is listed and pulled through the other at once', async () => {
    const store = s3.storeUrl('served');
    const a = await serve(store, s3.env);
    const b = await serve(store, s3.env);
    try {
      const api = async (base: string, path: string) => {
        const res = await fetch(`${base}/api/v1${path}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
        expect(res.status, path).toBe(200);
        return (await res.json()) as { items: { version: string }[] };
      };
      const env = { ...s3.env, KK_TOKEN: ADMIN_TOKEN };
      const build = sb.path('served', 'build');
      const push = (version: string) =>
        sb.kk(['push', '-p', 'fleet', '-a', 'web', '--version', version, '--path', build, '--config', '.kkartifact.yml', '--store', a.url], { cwd: sb.path('served'), env });
      await mkdir(sb.path('served'), { recursive: true });
      await writeFile(sb.path('served', '.kkartifact.yml'), 'store: ./unused\n');
      await writeTree(build, { 'index.html': '<h1>one</h1>\n', 'app.bin': pseudoRandom(200 * 1024, 'served') });
      const p1 = await push('1');
      expect(p1.code, p1.stderr).toBe(0);
      // B lists (and so caches) the app before the second push through A.
      expect((await api(b.url, '/projects/fleet/apps/web/versions')).items.map((v) => v.version)).toEqual(['1']);

      await writeTree(build, { 'index.html': '<h1>two</h1>\n' });
      const p2 = await push('2');
      expect(p2.code, p2.stderr).toBe(0);
      expect((await api(b.url, '/projects/fleet/apps/web/versions')).items.map((v) => v.version)).toEqual(['2', '1']);
      const listed = await sb.kkJson(['versions', '-p', 'fleet', '-a', 'web', '--store', b.url], { cwd: sb.path('served'), env });
      expect(listed.json.versions.map((v: { version: string }) => v.version)).toEqual(['2', '1']);
      const target = sb.path('served', 'deploy');
      const pulled = await sb.kk(['pull', '-p', 'fleet', '-a', 'web', '--version', 'latest', '--path', target, '--config', '.kkartifact.yml', '--store', b.url], {
        cwd: sb.path('served'),
        env,
      });
      expect(pulled.code, pulled.stderr).toBe(0);
      expect(await rsyncDifferences(build, target)).toBe('');
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it('kk copy file -> s3 -> a new file store reproduces every version byte-identically; a second copy sends nothing', async () => {
    const dir = sb.path('copy');
    await mkdir(dir, { recursive: true });
    await writeFile(sb.path('copy', '.kkartifact.yml'), 'store: ./origin\nchunk_size: 64KB\n');
    const versions = [
      ['web', 'site', 'v1'],
      ['web', 'site', 'v2'],
      ['data', 'etl', '2024.1'],
    ] as const;
    for (const [project, app, version] of versions) {
      const tree = sb.path('copy', 'trees', project, app, version);
      await writeTree(tree, { 'shared.bin': pseudoRandom(500 * 1024, 'shared'), 'own.txt': `${project} ${app} ${version}\n` });
      const r = await kk(['push', '-p', project, '-a', app, '--version', version, '--path', tree, '--packs', 'none'], dir);
      expect(r.code, r.stderr).toBe(0);
    }
    const url = s3.storeUrl('copied');

    const toS3 = await kkJson(['copy', '--from', './origin', '--to', url], dir);
    expect(toS3.code, toS3.stderr).toBe(0);
    expect(toS3.json).toMatchObject({ versions: 3, versionsUnchanged: 0 });
    expect(toS3.json.chunksCopied).toBe(await chunkObjects('copied'));
    expect(toS3.json.to).toContain('s3://');

    const back = await kkJson(['copy', '--from', url, '--to', './copy-back'], dir);
    expect(back.code, back.stderr).toBe(0);
    expect(back.json).toMatchObject({ versions: 3, versionsUnchanged: 0, chunksCopied: toS3.json.chunksCopied });
    for (const [project, app, version] of versions) {
      const target = sb.path('copy', 'deployed', project, app, version);
      const r = await kk(['pull', '-p', project, '-a', app, '--version', version, '--path', target, '--store', './copy-back'], dir);
      expect(r.code, r.stderr).toBe(0);
      expect(await rsyncDifferences(sb.path('copy', 'trees', project, app, version), target)).toBe('');
    }
    const listed = await kkJson(['versions', '-p', 'web', '-a', 'site', '--store', './copy-back'], dir);
    expect(listed.json.versions.map((v: { version: string }) => v.version)).toEqual(['v2', 'v1']);

    const again = await kkJson(['copy', '--from', './origin', '--to', url], dir);
    expect(again.code, again.stderr).toBe(0);
    expect(again.json).toMatchObject({ versions: 3, versionsUnchanged: 3, chunksCopied: 0, bytesCopied: 0 });
    const text = await kk(['copy', '--from', url, '--to', './copy-back'], dir);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^copied 0 versions from s3:\/\/.* \(3 already there\)\n {2}sent 0 chunks/);
  });

  it('kk copy narrows to a project, an app or one version, and refuses --app without --project', async () => {
    const dir = sb.path('copy');
    const url = s3.storeUrl('narrow');
    const one = await kkJson(['copy', '--from', './origin', '--to', url, '-p', 'web', '-a', 'site', '--version', 'v1'], dir);
    expect(one.code, one.stderr).toBe(0);
    expect(one.json).toMatchObject({ versions: 1, versionsUnchanged: 0 });
    const project = await kkJson(['copy', '--from', './origin', '--to', url, '-p', 'web'], dir);
    expect(project.json).toMatchObject({ versions: 2, versionsUnchanged: 1 });
    const projects = await kkJson(['projects', '--store', url], dir);
    expect(projects.json.projects).toEqual(['web']);

    const usage = await kk(['copy', '--from', './origin', '--to', url, '--app', 'site'], dir);
    expect(usage.code).toBe(2);
    const missing = await kkJson(['copy', '--from', './no-store-here', '--to', url], dir);
    expect(missing.code).toBe(1);
    expect(missing.json.error).toMatchObject({ code: 'NOT_FOUND' });
  });
});
