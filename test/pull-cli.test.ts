// Issue 12 through the real `kk` binary: kk pause|resume --path refuses pulls (exit 4, who/why in
// the message), --on-local-change fail (nothing applied), --mode events with --changed-from, and
// the depth-limit warning. Bytes on disk checked.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sandbox, type Sandbox } from '../packages/cli/test/helpers.js';

let sb: Sandbox;
let store: string;
const target = () => sb.path('deploy');
const pullArgs = (version: string, ...extra: string[]) => ['pull', '--store', store, '-p', 'shop', '-a', 'web', '--version', version, '--path', target(), ...extra];

beforeAll(async () => {
  sb = await sandbox();
  store = sb.path('store');
  for (const [v, files] of [
    ['1', { 'index.html': 'v1\n', 'conf/app.yml': 'port: 1\n', 'a/b/c/d/deep.txt': 'deep1\n' }],
    ['2', { 'index.html': 'v2\n', 'conf/app.yml': 'port: 2\n', 'a/b/c/d/deep.txt': 'deep2\n' }],
  ] as const) {
    const dir = sb.path(`src${v}`);
    for (const [p, body] of Object.entries(files)) {
      await mkdir(join(dir, p, '..'), { recursive: true });
      await writeFile(join(dir, p), body);
    }
    await writeFile(sb.path(`kk${v}.yml`), '');
    const r = await sb.kk(['push', '--store', store, '-p', 'shop', '-a', 'web', '--version', v, '--path', dir, '--config', sb.path(`kk${v}.yml`)]);
    expect(r.code, r.stderr).toBe(0);
  }
  await writeFile(sb.path('.kkartifact.yml'), '');
});
afterAll(async () => sb.cleanup());

const read = (p: string) => readFile(join(target(), p), 'utf8');

describe('kk pull: local pause, local changes, sync modes (issue 12)', () => {
  it('kk pause --path: the pull exits 4 naming who and why, nothing applied; kk resume --path lifts it', async () => {
    expect((await sb.kk(pullArgs('1'))).code).toBe(0);
    const p = await sb.kk(['pause', '--path', target(), '--reason', 'db migration']);
    expect(p.code, p.stderr).toBe(0);
    const r = await sb.kkJson(pullArgs('2'));
    expect(r.code).toBe(4);
    expect(r.json.error.code).toBe('PAUSED');
    expect(r.json.error.message).toContain('db migration');
    expect(r.json.error.message).toMatch(/paused by \S+@\S+ since /);
    expect(await read('index.html')).toBe('v1\n');
    const st = await sb.kk(['status', '--path', target()]);
    expect(st.stdout).toContain('paused: by ');
    expect((await sb.kk(['resume', '--path', target()])).code).toBe(0);
    expect((await sb.kk(pullArgs('2'))).code).toBe(0);
    expect(await read('index.html')).toBe('v2\n');
  });

  it('--on-local-change fail refuses and names the file; events mode applies only the listed paths', async () => {
    await writeFile(join(target(), 'conf/app.yml'), 'port: 9 # by hand\n');
    const r = await sb.kkJson(pullArgs('1', '--on-local-change', 'fail'));
    expect(r.code).toBe(1);
    expect(r.json.error.code).toBe('TARGET_CONFLICT');
    expect(r.json.error.message).toContain('conf/app.yml (modified)');
    expect(await read('index.html')).toBe('v2\n');

    await writeFile(sb.path('changed.txt'), 'index.html\n./a/b\n');
    const e = await sb.kkJson(pullArgs('1', '--mode', 'events', '--changed-from', sb.path('changed.txt')));
    expect(e.code, e.stderr).toBe(0);
    expect(e.json.syncMode).toBe('events');
    expect(await read('index.html')).toBe('v1\n');
    expect(await read('a/b/c/d/deep.txt')).toBe('deep1\n');
    expect(await read('conf/app.yml')).toBe('port: 9 # by hand\n');
  });

  it('--max-depth warns about what it did not apply', async () => {
    const r = await sb.kk(pullArgs('2', '--max-depth', '3'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toMatch(/warning: 2 path\(s\) of the version lie deeper than 3 directories and were not applied \(first: a\/b\/c\/d/);
    expect(await read('a/b/c/d/deep.txt')).toBe('deep1\n');
    expect(await read('index.html')).toBe('v2\n');
  });
});
