// Acceptance 6: without a TTY kk prints no ANSI escape codes; under a pseudo-terminal it shows
// live progress (bytes, rate, ETA) while pushing a 1 GiB file.
import { rm, stat, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANSI, KK_BIN, type Sandbox, cleanEnv, run, sandbox, writeRandomFile, writeTree } from './helpers.js';

const GiB = 1024 * 1024 * 1024;

describe('no TTY: no escape codes', () => {
  let sb: Sandbox;
  beforeAll(async () => {
    sb = await sandbox();
    await writeFile(sb.path('.kkartifact.yml'), 'store: ./store\n');
    await writeTree(sb.path('build'), { 'a.txt': 'a\n', 'sub/b.bin': Buffer.alloc(300_000, 7) });
  });
  afterAll(() => sb.cleanup());

  it('push, pull, diff, status, versions, verify, errors and help print plain text', async () => {
    const app = ['--project', 'p', '--app', 'a'];
    const runs = [
      await sb.kk(['push', ...app, '--version', '1', '--path', 'build']),
      await sb.kk(['pull', ...app, '--version', '1', '--path', 'deploy']),
      await sb.kk(['diff', ...app, '--version', '1', '--path', 'deploy']),
      await sb.kk(['status', '--path', 'deploy']),
      await sb.kk(['versions', ...app]),
      await sb.kk(['verify', '--path', 'deploy']),
      await sb.kk(['pull', ...app, '--version', '2', '--path', 'deploy']),
      await sb.kk(['push', '--help']),
    ];
    expect(runs.map((r) => r.code)).toEqual([0, 0, 0, 0, 0, 0, 1, 0]);
    for (const r of runs) {
      expect(r.stdout).not.toMatch(ANSI);
      expect(r.stderr).not.toMatch(ANSI);
    }
    expect(runs[6]!.stderr).toMatch(/^kk: p\/a has no version or channel "2"/);
  });

  it('--quiet prints nothing on success, and still the error on failure', async () => {
    const app = ['--project', 'q', '--app', 'a', '--quiet'];
    const push = await sb.kk(['push', ...app, '--version', '1', '--path', 'build']);
    const pull = await sb.kk(['pull', ...app, '--version', '1', '--path', 'deploy-q']);
    expect([push, pull].map((r) => [r.code, r.stdout, r.stderr])).toEqual([[0, '', ''], [0, '', '']]);
    const bad = await sb.kk(['pull', ...app, '--version', '9', '--path', 'deploy-q']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^kk: q\/a has no version or channel "9"\n/);
  });
});

describe('a pseudo-terminal shows progress', () => {
  let sb: Sandbox;
  beforeAll(async () => {
    sb = await sandbox();
    await writeFile(sb.path('.kkartifact.yml'), 'store: ./store\n');
    await writeRandomFile(sb.path('build', 'big.bin'), GiB, 'one gibibyte');
  });
  afterAll(() => sb.cleanup());

  it('pushing a 1 GiB file draws a live bar with bytes, rate and ETA', async () => {
    const cmd = [process.execPath, KK_BIN, 'push', '--project', 'demo', '--app', 'big', '--version', '1.0.0', '--path', 'build'].map(shq).join(' ');
    // util-linux script(1) runs the command on a new pseudo-terminal and copies what it draws.
    const r = await run('script', ['-qfec', cmd, '/dev/null'], { cwd: sb.root, env: cleanEnv({ KK_STATE_DIR: sb.stateDir, TERM: 'xterm' }) });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const screen = r.stdout;
    expect(screen).toMatch(ANSI);
    expect(screen).toMatch(/hashing +\S+ \S+ \/ 1\.00 GiB +\d+% +\S+ \S+\/s +ETA \S+/);
    expect(screen).toMatch(/uploading +\S+ \S+ \/ 1\.00 GiB +\d+% +\S+ \S+\/s +ETA \S+/);
    const uploadPercents = new Set([...screen.matchAll(/uploading +\S+ \S+ \/ 1\.00 GiB +(\d+)%/g)].map((m) => m[1]));
    expect(uploadPercents.has('0') && uploadPercents.has('100')).toBe(true);
    expect(screen).toMatch(/pushed demo\/big 1\.0\.0 \(sha256:[0-9a-f]{12}\): 1 file, 1\.00 GiB/);
  });

  it('the same 1 GiB pulled without a TTY: plain progress lines at most, no escape codes', async () => {
    await rm(sb.path('build'), { recursive: true });
    const r = await sb.kk(['pull', '--project', 'demo', '--app', 'big', '--version', '1.0.0', '--path', 'deploy']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(ANSI);
    for (const line of r.stderr.split('\n').filter(Boolean)) expect(line).toMatch(/^kk: (planning|fetching|applying) /);
    expect((await stat(sb.path('deploy', 'big.bin'))).size).toBe(GiB);
  });
});

function shq(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
