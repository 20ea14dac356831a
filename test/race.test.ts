// Issue 10, acceptance 3: while pulls and journal replays run in a child process, this process
// keeps swapping directories of the target for symlinks to an outside directory (and back).
// Whatever interleaving results, the outside directory stays byte-identical, every outcome is a
// clean result or a coded error, and once the swapping stops a pull converges.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { push, pull } from '@kk/core';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

const CHILD = fileURLToPath(new URL('./pull-child.mjs', import.meta.url));
let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

const V1: Record<string, string> = { 'sub/s.txt': 's v1\n', 'sub/deep/t.txt': 't v1\n', 'ro/a.txt': 'a v1\n', 'flip/x': 'file in v1\n', 'keep/k.txt': 'k\n' };
const V2: Record<string, string> = { 'sub/s.txt': 's v2\n', 'sub/deep/u.txt': 'u v2\n', 'ro/a.txt': 'a v2\n', 'ro/b.txt': 'b v2\n', 'flip/x/in.txt': 'dir in v2\n', 'keep/k.txt': 'k\n' };
for (let i = 0; i < 30; i++) {
  V1[`sub/many/f${i}.txt`] = `v1 ${i}\n`;
  V2[`sub/many/f${i}.txt`] = `v2 ${i}\n`;
  V1[`keep/m${i}.txt`] = `m ${i}\n`;
  if (i % 3) V2[`keep/m${i}.txt`] = `m ${i} v2\n`;
}

function child(target: string, version: string, mode: string): Promise<{ killed: boolean; res?: { ok: boolean; code?: string | null; message?: string } }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [CHILD, sb.storeDir, sb.stateDir, target, 'race', 'app', version, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('error', reject);
    c.on('exit', (_code, signal) => resolve({ killed: signal === 'SIGKILL', res: out.trim() ? JSON.parse(out.trim().split('\n').at(-1)!) : undefined }));
  });
}

it('a directory swapped for a symlink to the outside, at any moment of pulls and replays, reaches nothing outside', async () => {
  for (const [dir, files] of [[sb.path('v1'), V1], [sb.path('v2'), V2]] as const) {
    for (const [p, data] of Object.entries(files)) {
      await mkdir(join(dir, p, '..'), { recursive: true });
      await writeFile(join(dir, p), data);
    }
    await chmod(join(dir, 'ro'), 0o555);
  }
  const base = { store: sb.store, hasher: sb.hasher, project: 'race', app: 'app', stateDir: sb.stateDir };
  await push({ ...base, version: '1', dir: sb.path('v1') });
  await push({ ...base, version: '2', dir: sb.path('v2') });
  const outside = sb.path('outside');
  for (const p of ['s.txt', 'deep/t.txt', 'a.txt', 'in.txt', 'many/f1.txt', 'k.txt']) {
    await mkdir(join(outside, p, '..'), { recursive: true });
    await writeFile(join(outside, p), `outside ${p}\n`);
  }
  const want = await snapshot(outside);
  const target = sb.path('deploy');
  await pull({ ...base, version: '1', target });
  const realTarget = fs.realpathSync(target);

  // The attacker: every few hundred microseconds, one directory moves away and a symlink to the
  // outside takes its place, or the swap is undone.
  const victims = ['sub', 'sub/deep', 'sub/many', 'ro', 'flip', 'keep', 'flip/x'];
  let swaps = 0;
  let running = true;
  const attacker = (async () => {
    for (let i = 0; running && i < 200_000; i++) {
      const v = join(target, victims[i % victims.length]!);
      try {
        // The attacker works inside the target only: not through a symlink it planted itself.
        if (!fs.realpathSync(join(v, '..')).startsWith(realTarget)) continue;
        const st = fs.lstatSync(v);
        if (st.isDirectory()) {
          fs.renameSync(v, `${v}.moved${i}`);
          fs.symlinkSync(outside, v);
          swaps++;
        } else if (st.isSymbolicLink()) {
          fs.unlinkSync(v);
        }
      } catch {
        /* raced with the pull: try the next one */
      } finally {
        await new Promise((r) => setTimeout(r, i % 3));
      }
    }
  })();

  const outcomes: Record<string, number> = {};
  for (let run = 0; run < 24; run++) {
    const version = run % 2 ? '1' : '2';
    // Every third run dies at a step of its commit, so the next one replays under attack.
    const mode = run % 3 === 0 ? `die:${1 + (run % 11) * 4}` : 'count';
    const r = await child(target, version, mode);
    const key = r.killed ? 'killed' : r.res?.ok ? 'ok' : `error ${r.res?.code}`;
    outcomes[key] = (outcomes[key] ?? 0) + 1;
    if (!r.killed) {
      expect(r.res, 'the child reported an outcome').toBeDefined();
      if (!r.res!.ok) expect(r.res!.code, `an uncoded error: ${r.res!.message}`).toMatch(/^[A-Z_]+$/);
    }
    expect(await snapshot(outside), `outside changed in run ${run} (${key})`).toEqual(want);
  }
  running = false;
  await attacker;
  expect(swaps).toBeGreaterThan(10);

  // Without the attacker, the next pull (or a repair) converges to v2 exactly.
  await pull({ ...base, version: '2', target, force: true }).catch(() => pull({ ...base, version: '2', target, force: true, repair: true }));
  expect(await snapshot(target)).toEqual(await snapshot(sb.path('v2')));
  expect(await snapshot(outside)).toEqual(want);
  console.log(`race test: ${swaps} swaps over 24 runs: ${JSON.stringify(outcomes)}`);
  fs.chmodSync(join(target, 'ro'), 0o755);
}, 180_000);
