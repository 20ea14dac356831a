// Issue 2, acceptance 5: SIGKILL a pull at random moments while it applies v2 over v1. Every
// manifest path always holds a complete v1 or v2 file, and the next pull converges to v2.
import { execFileSync, spawn } from 'node:child_process';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TargetState, push, pull } from '@kk/core';
import { keystream } from '../fixtures/generate.mjs';
import { sandbox, sha256File, snapshot, type Sandbox } from './helpers.js';

const CHILD = fileURLToPath(new URL('./crash-child.mjs', import.meta.url));
const PULL_CHILD = fileURLToPath(new URL('./pull-child.mjs', import.meta.url));
let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

function runChild(target: string, killAfterMs?: number): Promise<{ killed: boolean; ms: number; code: number | null }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [CHILD, sb.storeDir, sb.stateDir, target, '2'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    let killed = false;
    const timer = killAfterMs === undefined ? undefined : setTimeout(() => {
      killed = child.kill('SIGKILL');
    }, killAfterMs);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (!killed && code !== 0) reject(new Error(`child failed (${code ?? signal}): ${stderr}`));
      else resolve({ killed: killed && signal === 'SIGKILL', ms: Date.now() - t0, code });
    });
  });
}

it('survives SIGKILL at 20+ random moments of a 300-file apply', async () => {
  const rnd = keystream('crash');
  const v1dir = sb.path('v1');
  const v2dir = sb.path('v2');
  // v1: 300 files of 1-40 KiB in 10 dirs; v2 modifies 150, deletes 50, adds 50.
  for (let i = 0; i < 300; i++) {
    const size = 1024 + (rnd(2).readUInt16LE(0) % (40 * 1024));
    const data = rnd(size);
    const rel = `d${i % 10}/f${i}.bin`;
    await mkdir(join(v1dir, `d${i % 10}`), { recursive: true });
    await writeFile(join(v1dir, rel), data);
    if (i % 6 === 5) continue; // deleted in v2
    await mkdir(join(v2dir, `d${i % 10}`), { recursive: true });
    await writeFile(join(v2dir, rel), i % 2 === 0 ? rnd(size + 100) : data);
  }
  for (let i = 0; i < 50; i++) {
    await mkdir(join(v2dir, `new${i % 5}`), { recursive: true });
    await writeFile(join(v2dir, `new${i % 5}/n${i}.bin`), rnd(2048 + i * 100));
  }
  const base = { store: sb.store, hasher: sb.hasher, project: 'crash', app: 'app', stateDir: sb.stateDir };
  await push({ ...base, version: '1', dir: v1dir });
  await push({ ...base, version: '2', dir: v2dir });
  const want1 = await snapshot(v1dir);
  const want2 = await snapshot(v2dir);
  const paths = new Set([...want1.keys(), ...want2.keys()].filter((p) => want1.get(p)?.type === 'file' || want2.get(p)?.type === 'file'));

  const target = sb.path('deploy');
  // How long an uninterrupted child apply takes here, to spread the kills over it.
  await pull({ ...base, version: '1', target });
  const full = await runChild(target);
  expect(full.killed).toBe(false);
  expect(await snapshot(target)).toEqual(want2);

  const files1 = [...want1.values()].filter((e) => e.type === 'file').length;
  const files2 = [...want2.values()].filter((e) => e.type === 'file').length;
  let kills = 0;
  let mixed = 0;
  let untouched = 0;
  for (let attempt = 0; kills < 20 && attempt < 80; attempt++) {
    await pull({ ...base, version: '1', target });
    expect(await snapshot(target)).toEqual(want1);
    const r = await runChild(target, Math.floor(Math.random() * full.ms * 1.1));
    if (!r.killed) continue;
    kills++;
    let v1n = 0;
    let v2n = 0;
    for (const p of paths) {
      const abs = join(target, p);
      const a = want1.get(p)?.sha256;
      const b = want2.get(p)?.sha256;
      if (!existsSync(abs)) {
        // Absent is a complete state only for a path one of the versions lacks.
        expect(a === undefined || b === undefined, `${p} vanished`).toBe(true);
        continue;
      }
      const h = sha256File(await readFile(abs));
      expect([a, b], `${p} holds neither v1 nor v2`).toContain(h);
      if (h === a) v1n++;
      if (h === b) v2n++;
    }
    if (v1n === files1) untouched++;
    else if (v2n < files2) mixed++;
    // The next run finishes (or redoes) the apply and converges to v2 exactly.
    await pull({ ...base, version: '2', target });
    expect(await snapshot(target)).toEqual(want2);
  }
  expect(kills).toBeGreaterThanOrEqual(20);
  console.log(`crash test: ${kills} kills: ${untouched} before the commit, ${mixed} mid-commit, ${kills - untouched - mixed} after it`);
  await rm(target, { recursive: true, force: true });
});

// Issue 10, acceptance 2: file<->directory changes both ways, mode changes, deletes and a
// read-only directory; kills land before, during and after the commit, and during replays.
const C1: Record<string, string> = { 'flip/x': 'x is a file in v1\n', 'd2/inner.txt': 'd2 is a dir in v1\n', 'mode.sh': 'echo\n', 'gone.txt': 'bye\n', 'ro/a.txt': 'ro a v1\n', 'ro/c.txt': 'ro c v1\n', 'sub/deep/t.txt': 't v1\n' };
const C2: Record<string, string> = { 'flip/x/inner.txt': 'x is a dir in v2\n', d2: 'd2 is a file in v2\n', 'mode.sh': 'echo\n', 'ro/a.txt': 'ro a v2\n', 'ro/b.txt': 'ro b v2\n', 'sub/deep/u.txt': 'u v2\n', 'gone-dir': 'was a tree\n' };
for (let i = 0; i < 24; i++) {
  C1[`many/f${i}.txt`] = `file ${i} v1\n`;
  if (i % 5 !== 4) C2[`many/f${i}.txt`] = i % 2 ? `file ${i} v1\n` : `file ${i} v2 ${'x'.repeat(i * 50)}\n`;
}
C1['gone-dir/a/b.txt'] = 'deleted tree\n';

function runPullChild(target: string, version: string, kill: { afterMs?: number; atStep?: number } = {}): Promise<{ killed: boolean; ms: number; steps: number }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const mode = kill.atStep ? `die:${kill.atStep}` : 'count';
    const child = spawn(process.execPath, [PULL_CHILD, sb.storeDir, sb.stateDir, target, 'crash', 'flip', version, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stderr = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (stderr += d));
    let timedOut = false;
    const timer = kill.afterMs === undefined ? undefined : setTimeout(() => (timedOut = child.kill('SIGKILL')), kill.afterMs);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const killed = signal === 'SIGKILL';
      const res = out.trim() ? (JSON.parse(out.trim().split('\n').at(-1)!) as { ok: boolean; steps?: number; message?: string }) : undefined;
      if (!killed && (code !== 0 || !res?.ok)) reject(new Error(`child failed (${code ?? signal}): ${res?.message ?? ''} ${stderr}`));
      else resolve({ killed: killed && (timedOut || !!kill.atStep), ms: Date.now() - t0, steps: res?.steps ?? 0 });
    });
  });
}

it('survives 100+ SIGKILLs (some during the replay) across file<->dir, mode, delete and read-only changes', async () => {
  const d1 = sb.path('c1');
  const d2 = sb.path('c2');
  for (const [dir, files] of [[d1, C1], [d2, C2]] as const) {
    for (const [p, data] of Object.entries(files)) {
      await mkdir(join(dir, p, '..'), { recursive: true });
      await writeFile(join(dir, p), data);
    }
  }
  await chmod(join(d2, 'mode.sh'), 0o755);
  await chmod(join(d1, 'ro'), 0o555);
  await chmod(join(d2, 'ro'), 0o555);
  const base = { store: sb.store, hasher: sb.hasher, project: 'crash', app: 'flip', stateDir: sb.stateDir };
  await push({ ...base, version: '1', dir: d1 });
  await push({ ...base, version: '2', dir: d2 });
  const want1 = await snapshot(d1);
  const want2 = await snapshot(d2);
  const allowed = new Set([...want1.keys(), ...want2.keys()]);
  const target = sb.path('deploy-flip');
  await pull({ ...base, version: '1', target });
  const full = await runPullChild(target, '2');
  expect(full.killed).toBe(false);
  expect(full.steps).toBeGreaterThan(20);
  expect(await snapshot(target)).toEqual(want2);

  const check = async () => {
    const seen = await snapshot(target);
    for (const [p, e] of seen) {
      expect(allowed.has(p), `stray ${p}`).toBe(true);
      if (e.type !== 'file') continue;
      expect([want1.get(p)?.sha256, want2.get(p)?.sha256], `${p} holds neither v1 nor v2`).toContain(e.sha256);
    }
    for (const p of allowed) {
      const a = want1.get(p);
      const b = want2.get(p);
      // A path both versions hold as a file is never missing.
      if (a?.type === 'file' && b?.type === 'file') expect(seen.get(p)?.type, `${p} vanished`).toBe('file');
    }
  };
  let kills = 0;
  let replayKills = 0;
  let midCommit = 0;
  const journal = new TargetState(target, sb.stateDir).journalFile;
  for (let attempt = 0; kills < 100 && attempt < 250; attempt++) {
    await pull({ ...base, version: '1', target });
    expect(await snapshot(target)).toEqual(want1);
    // Two kills in three at an exact step of the commit; the others by a timer (staging, startup).
    const pick = (steps: number) => (attempt % 3 === 2 ? { afterMs: Math.floor(full.ms * (0.3 + Math.random() * 0.8)) } : { atStep: 1 + Math.floor(Math.random() * (steps + 2)) });
    const r = await runPullChild(target, '2', pick(full.steps));
    if (!r.killed) continue;
    kills++;
    if (existsSync(journal)) midCommit++;
    await check();
    if (kills < 100) {
      // Kill the run that replays the journal, too.
      const again = await runPullChild(target, '2', pick(full.steps));
      if (again.killed) {
        kills++;
        replayKills++;
        await check();
      }
    }
    await pull({ ...base, version: '2', target });
    expect(await snapshot(target)).toEqual(want2);
    expect(execFileSync('rsync', ['-rcn', '--delete', '-i', `${d2}/`, `${target}/`], { encoding: 'utf8' })).toBe('');
  }
  expect(kills).toBeGreaterThanOrEqual(100);
  expect(replayKills).toBeGreaterThan(0);
  expect(midCommit).toBeGreaterThan(0);
  console.log(`crash test (file<->dir, modes, read-only dir): ${kills} kills, ${midCommit} mid-commit, ${replayKills} during a second run`);
  await chmod(join(target, 'ro'), 0o755).catch(() => {});
  await rm(target, { recursive: true, force: true });
}, 300_000);
