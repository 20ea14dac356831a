// Issue 14 through the built `kk`: push a tree and a big file to ssh:// (sshd on 127.0.0.1), pull
// back byte-exactly, a second push sends no chunk, the store directory is a file store too,
// `kk copy` file -> ssh -> s3 -> file, and a SIGKILL in the middle of a push. Sizes are the unit
// suite's (1,000 files, 64 MiB); bench/ssh-store.mjs runs the 20,000-file tree and 1 GiB.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { brotliDecompressSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3rverUnavailable, sshdUnavailable, startS3rver, startSshd } from '@kk/testkit';
import type { S3rverBackend, SshdBackend } from '@kk/testkit';
import { ensureTree } from '../../../bench/lib/data.mjs';
import { KK_BIN, type Sandbox, cleanEnv, rsyncDifferences, sandbox, writeRandomFile } from './helpers.js';

const unavailable = sshdUnavailable() ?? s3rverUnavailable();
if (unavailable && process.env.CI) throw new Error(`CI must run the ssh CLI tests: ${unavailable}`);

/** Every chunk object under `store` is complete: its decoded bytes hash to its name. */
async function chunksIntact(store: string): Promise<{ count: number; bad: string[] }> {
  const bad: string[] = [];
  let count = 0;
  const dir = join(store, 'chunks');
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])) {
    if (!e.isFile() || e.name.startsWith('.tmp-')) continue;
    count++;
    const obj = await readFile(join(e.parentPath, e.name));
    let raw: Buffer;
    try {
      raw = obj[0] === 0 ? obj.subarray(1) : brotliDecompressSync(obj.subarray(1));
    } catch {
      bad.push(e.name);
      continue;
    }
    if (createHash('sha256').update(raw).digest('hex') !== e.name) bad.push(e.name);
  }
  return { count, bad };
}

describe.skipIf(!!unavailable)(`kk with an ssh:// store on sshd${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let sshd: SshdBackend;
  let s3: S3rverBackend;
  let sb: Sandbox;
  let tree: string;
  let small: string;
  const kkJson = (args: string[]) => sb.kkJson(args, { env: s3.env });
  const app = (version: string, path: string) => ['-p', 'site', '-a', 'web', '--version', version, '--path', path];

  beforeAll(async () => {
    [sshd, s3, sb] = await Promise.all([startSshd(), startS3rver(), sandbox()]);
    await writeFile(sb.path('.kkartifact.yml'), 'store: ./unused\n');
    tree = (await ensureTree(sb.path('data'), 1000, () => {})).v1;
    small = (await ensureTree(sb.path('data'), 200, () => {})).v1;
  });
  afterAll(async () => {
    await sb?.cleanup();
    await Promise.all([sshd?.stop(), s3?.stop()]);
  });

  it('pushes a tree to ssh://, pulls it back byte-exactly; a second push sends no chunk; the directory is a file store', async () => {
    const root = sb.path('remote', 'tree-store');
    const url = sshd.storeUrl(root);
    const p1 = await kkJson(['push', ...app('1', tree), '--store', url, '--packs', 'none']);
    expect(p1.code, p1.stderr).toBe(0);
    expect(p1.json).toMatchObject({ status: 'created', chunksUploaded: p1.json.chunks });
    expect((await chunksIntact(root)).count).toBe(p1.json.chunks);

    const again = await kkJson(['push', ...app('2', tree), '--store', url]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.json).toMatchObject({ chunksUploaded: 0, bytesUploaded: 0 });

    const target = sb.path('deploy', 'tree');
    const pull = await kkJson(['pull', ...app('1', target), '--store', url]);
    expect(pull.code, pull.stderr).toBe(0);
    expect(await rsyncDifferences(tree, target)).toBe('');

    // The same directory opened as a file store holds the same versions.
    const viaFile = sb.path('deploy', 'tree-via-file');
    const local = await kkJson(['pull', ...app('2', viaFile), '--store', root]);
    expect(local.code, local.stderr).toBe(0);
    expect(await rsyncDifferences(tree, viaFile)).toBe('');
    expect((await readdir(root)).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
  });

  it('pushes and pulls a 64 MiB file byte-exactly', async () => {
    const src = sb.path('big', 'v1');
    await writeRandomFile(join(src, 'big.bin'), 64 * 1024 * 1024, 'ssh-big');
    const url = sshd.storeUrl(sb.path('remote', 'big-store'));
    const push = await kkJson(['push', ...app('1', src), '--store', url, '--packs', 'none']);
    expect(push.code, push.stderr).toBe(0);
    const target = sb.path('deploy', 'big');
    const pull = await kkJson(['pull', ...app('1', target), '--store', url]);
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.json.bytesFetched).toBeGreaterThanOrEqual(64 * 1024 * 1024);
    expect(await rsyncDifferences(src, target)).toBe('');
  });

  it('kk copy file -> ssh -> s3 -> file carries every version byte-identically', async () => {
    const origin = sb.path('copy', 'origin');
    const p = await kkJson(['push', ...app('1', small), '--store', origin, '--packs', 'none']);
    expect(p.code, p.stderr).toBe(0);
    const sshUrl = sshd.storeUrl(sb.path('remote', 'copy-store'));
    const s3Url = s3.storeUrl('from-ssh');
    const back = sb.path('copy', 'back');
    for (const [from, to] of [
      [origin, sshUrl],
      [sshUrl, s3Url],
      [s3Url, back],
    ] as const) {
      const c = await kkJson(['copy', '--from', from, '--to', to]);
      // With --json a failure is a JSON document on stdout: show it too.
      expect(c.code, `kk copy --from ${from} --to ${to}: ${c.stderr}${c.stdout}`).toBe(0);
      expect(c.json).toMatchObject({ versions: 1, chunksCopied: p.json.chunks });
    }
    // Same chunk objects, same manifest, same ref target: the stores are byte-identical but for timestamps.
    expect(await rsyncDifferences(join(origin, 'chunks'), join(back, 'chunks'))).toBe('');
    expect(await rsyncDifferences(join(origin, 'manifests'), join(back, 'manifests'))).toBe('');
    const ref = async (store: string) => JSON.parse(await readFile(join(store, 'refs', 'site', 'web', '1'), 'utf8')).manifest;
    expect(await ref(back)).toBe(await ref(origin));
    const target = sb.path('deploy', 'copied');
    const pull = await kkJson(['pull', ...app('1', target), '--store', back]);
    expect(pull.code, pull.stderr).toBe(0);
    expect(await rsyncDifferences(small, target)).toBe('');
  });

  it('a SIGKILL during a push leaves no partial object under a final key, and the next push completes', async () => {
    const src = sb.path('kill', 'v1');
    await writeRandomFile(join(src, 'big.bin'), 64 * 1024 * 1024, 'ssh-kill');
    const root = sb.path('remote', 'kill-store');
    const url = sshd.storeUrl(root);
    const child = spawn(process.execPath, [KK_BIN, 'push', ...app('1', src), '--store', url, '--packs', 'none'], {
      cwd: sb.root,
      env: cleanEnv({ KK_STATE_DIR: sb.stateDir }),
      stdio: 'ignore',
    });
    const exited = new Promise<string | null>((r) => child.once('exit', (_code, signal) => r(signal)));
    // Kill as soon as chunks start to land on the host (bounded: 60 s).
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && child.exitCode === null) {
      const some = await readdir(join(root, 'chunks')).catch(() => []);
      if (some.length) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    // The push did not get as far as its ref, and every chunk on the host is whole.
    await expect(stat(join(root, 'refs', 'site', 'web', '1'))).rejects.toThrow(/ENOENT/);
    const before = await chunksIntact(root);
    expect(before.bad).toEqual([]);

    const retry = await kkJson(['push', ...app('1', src), '--store', url, '--packs', 'none']);
    expect(retry.code, retry.stderr).toBe(0);
    expect(retry.json.status).toBe('created');
    // The host may still link what it had received when the client died, so at most these are new.
    expect(retry.json.chunksUploaded).toBeLessThanOrEqual(retry.json.chunks - before.count);
    const after = await chunksIntact(root);
    expect(after).toEqual({ count: retry.json.chunks, bad: [] });
    const target = sb.path('deploy', 'killed');
    const pull = await kkJson(['pull', ...app('1', target), '--store', url]);
    expect(pull.code, pull.stderr).toBe(0);
    expect(await rsyncDifferences(src, target)).toBe('');
  });

  it('an unreachable host is one line with a hint and exit code 1', async () => {
    await mkdir(sb.path('x'), { recursive: true });
    const r = await kkJson(['pull', ...app('1', sb.path('x', 'target')), '--store', `ssh://nobody@127.0.0.1:1${sb.path('remote')}?connect_timeout=5`]);
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ error: { code: 'BACKEND' } });
    expect(JSON.stringify(r.json)).toMatch(/sshd runs there/);
  });
});
