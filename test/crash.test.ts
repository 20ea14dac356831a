// Issue 2, acceptance 5: SIGKILL a pull at random moments while it applies v2 over v1. Every
// manifest path always holds a complete v1 or v2 file, and the next pull converges to v2.
import { spawn } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { push, pull } from '@kk/core';
import { keystream } from '../fixtures/generate.mjs';
import { sandbox, sha256File, snapshot, type Sandbox } from './helpers.js';

const CHILD = fileURLToPath(new URL('./crash-child.mjs', import.meta.url));
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
