// Issue 10, acceptance 4: 600 mutations of valid manifests, served by a store under a ref. Every
// pull of one ends in a result or a KkError with a code (never an uncaught exception or a wedge),
// and after each a pull of the good version converges byte for byte.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ERROR_CODES, KkError, Store, createMemoryDriver, manifestKey, pull, push, sha256Digest } from '@kk/core';
import { keystream, textBytes } from '../fixtures/generate.mjs';
import { sandbox, snapshot, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(async () => {
  sb = await sandbox();
});
afterAll(async () => sb.cleanup());

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** JSON with sorted keys and no whitespace, whatever the shape (arrays keep their order). */
function sorted(v: Json): string {
  if (Array.isArray(v)) return `[${v.map(sorted).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${sorted(v[k]!)}`).join(',')}}`;
  return JSON.stringify(v);
}

const ODD: Json[] = [
  null, true, -1, 0, 1.5, 2 ** 53, 0o7777, 0o4755, 1e300, '', 'x', '../up', '/abs', 'a//b', './a', 'a/..', '.kk-staging/x', 'a\u0000b',
  'é/ü', 'a\\b', 'x'.repeat(300), `${'d'.repeat(200)}/`.repeat(21), 'sha256:' + '0'.repeat(64), 'sha256:zz', [], {}, [[]], [null], { path: 'p' },
];

it('every mutated manifest ends in a result or a coded KkError, and the good version converges after each', async () => {
  const store = await Store.open(createMemoryDriver(), { create: true, avgChunkSize: 64 * 1024 });
  const src = sb.path('src');
  await mkdir(join(src, 'dir/sub'), { recursive: true });
  await writeFile(join(src, 'a.txt'), 'a\n');
  await writeFile(join(src, 'empty'), '');
  await writeFile(join(src, 'dir/b.bin'), textBytes(300_000, 'b'));
  await writeFile(join(src, 'dir/sub/c.txt'), 'c\n');
  const base = { store, hasher: sb.hasher, project: 'fuzz', app: 'app', stateDir: sb.stateDir };
  await push({ ...base, version: 'good', dir: src });
  const goodDigest = (await store.resolveVersion('fuzz', 'app', 'good')).manifest;
  const good = JSON.parse(Buffer.from((await store.driver.get(manifestKey(goodDigest)))!).toString('utf8')) as { [k: string]: Json };
  const want = await snapshot(src);
  const target = sb.path('deploy');
  await pull({ ...base, version: 'good', target });

  const rnd = keystream('manifest-fuzz');
  const pick = (n: number) => rnd(4).readUInt32LE(0) % n;
  /** Every (parent, key) in the document, for mutation. */
  const slots = (v: Json, out: [Json[] | { [k: string]: Json }, string | number][] = []) => {
    if (Array.isArray(v)) v.forEach((x, i) => (out.push([v, i]), slots(x, out)));
    else if (v && typeof v === 'object') for (const k of Object.keys(v)) out.push([v, k]), slots(v[k]!, out);
    return out;
  };
  const outcomes: Record<string, number> = {};
  const N = 600;
  for (let i = 0; i < N; i++) {
    const m = structuredClone(good) as { [k: string]: Json };
    const version = `fz-${i}`;
    m.version = version;
    for (let k = 0, edits = 1 + pick(3); k < edits; k++) {
      const all = slots(m);
      const [parent, key] = all[pick(all.length)]!;
      const p = parent as Record<string | number, Json>;
      switch (pick(6)) {
        case 0:
          if (Array.isArray(parent)) parent.splice(key as number, 1);
          else delete p[key];
          break;
        case 1:
          p[key] = ODD[pick(ODD.length)]!;
          break;
        case 2:
          if (typeof p[key] === 'number') p[key] = (p[key] as number) + [1, -1, 1000, 0.5][pick(4)]!;
          else if (typeof p[key] === 'string') p[key] = `${p[key]}${['', '/x', 'A', '/'][pick(4)]}`;
          else p[key] = ODD[pick(ODD.length)]!;
          break;
        case 3:
          if (Array.isArray(parent)) parent.push(structuredClone(parent[key as number]!));
          else p[`extra${k}`] = ODD[pick(ODD.length)]!;
          break;
        case 4: {
          // Another entry's value: duplicate paths, sizes and digests of the wrong file.
          const [op, ok] = all[pick(all.length)]!;
          p[key] = structuredClone((op as Record<string | number, Json>)[ok]!) ?? null;
          break;
        }
        default:
          if (Array.isArray(p[key])) (p[key] as Json[]).reverse();
          else p[key] = [p[key]!];
      }
    }
    const form = pick(10);
    let bytes = Buffer.from(form < 7 ? sorted(m) : form < 9 ? JSON.stringify(m, null, 1) : sorted(m).slice(0, pick(200)));
    if (form === 9 && pick(2)) bytes = Buffer.concat([bytes, Buffer.from([0xff, 0xfe])]);
    const d = sha256Digest(bytes);
    await store.driver.put!(manifestKey(d), bytes);
    await store.putRef('fuzz', 'app', version, d);

    let outcome = 'ok';
    try {
      await pull({ ...base, version, target });
    } catch (err) {
      expect(err, `mutation ${i}: ${String(err)}`).toBeInstanceOf(KkError);
      expect(Object.keys(ERROR_CODES)).toContain((err as KkError).code);
      outcome = (err as KkError).code;
    }
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    const r = await pull({ ...base, version: 'good', target });
    expect(r.version).toBe('good');
    expect(await snapshot(target), `after mutation ${i} (${outcome})`).toEqual(want);
  }
  expect(await snapshot(target)).toEqual(want);
  expect(Object.values(outcomes).reduce((a, b) => a + b, 0)).toBe(N);
  console.log(`manifest fuzz: ${N} mutations: ${JSON.stringify(outcomes)}`);
}, 240_000);
