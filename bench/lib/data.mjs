// The bench's data sets (issue 4 and issue 7), generated deterministically under bench/.data and
// reused while their spec is unchanged. Nothing here is ever committed.
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, statSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { keystream, textBytes, writeEditedCopy, writeRandomFile } from '../../fixtures/generate.mjs';
import { exec, prng, rmrf } from './util.mjs';

const GENERATOR = 'kk-bench-data/1';
// Fixed mtimes, so rsync's quick check and kk's manifests see the same thing on every run.
const V1_MTIME = Date.UTC(2024, 0, 1) / 1000;
const V2_MTIME = Date.UTC(2024, 1, 1) / 1000;

/** Runs `build` into `dir` unless `dir/.spec` already records `spec`; returns `dir`. */
async function cached(dir, spec, build) {
  const marker = join(dir, '.spec');
  const want = JSON.stringify({ generator: GENERATOR, ...spec });
  if (existsSync(marker) && readFileSync(marker, 'utf8') === want) return dir;
  rmrf(dir);
  mkdirSync(dir, { recursive: true });
  await build(dir);
  writeFileSync(marker, want);
  return dir;
}

/**
 * big: one incompressible file of `bytes` (v1); v2 = v1 with 1 MiB inserted at 40% and 64 KiB
 * overwritten at 10%, 70% and 90%. Returns { v1, v2 } directories holding big.bin each.
 */
export async function ensureBig(root, bytes, log) {
  const dir = await cached(join(root, `big-${bytes}`), { kind: 'big', bytes }, (d) => {
    log(`generating big data: 2 x ${(bytes / 2 ** 20).toFixed(0)} MiB`);
    const v1 = join(d, 'v1', 'big.bin');
    const v2 = join(d, 'v2', 'big.bin');
    writeRandomFile(v1, bytes, 'bench-big-v1');
    mkdirSync(dirname(v2), { recursive: true });
    const at = (f) => Math.floor(bytes * f);
    writeEditedCopy(
      v1,
      v2,
      [
        { insertAt: at(0.4), bytes: 1024 * 1024 },
        { overwriteAt: at(0.1), bytes: 64 * 1024 },
        { overwriteAt: at(0.7), bytes: 64 * 1024 },
        { overwriteAt: at(0.9), bytes: 64 * 1024 },
      ],
      'bench-big-v2',
    );
    utimesSync(v1, V1_MTIME, V1_MTIME);
    utimesSync(v2, V2_MTIME, V2_MTIME);
  });
  return { dir, v1: join(dir, 'v1'), v2: join(dir, 'v2') };
}

/**
 * tree: `files` files of 100 B - 64 KiB (log-uniform, so most are small as in real build trees),
 * a third binary (incompressible), two thirds text (compressible), in nested directories (v1).
 * v2 = v1 with 1% of files changed (a span rewritten, size changed), 0.5% deleted, 100 added.
 */
export async function ensureTree(root, files, log) {
  const added = Math.min(100, Math.max(1, Math.round(files * 0.005)));
  const spec = { kind: 'tree', files, added };
  const dir = await cached(join(root, `tree-${files}`), spec, async (d) => {
    log(`generating tree data: ${files} files`);
    const rnd = prng(`bench-tree-${files}`);
    // Directories: each hangs under a random earlier one, at most 6 deep.
    const dirs = [''];
    const depth = [0];
    const dirCount = Math.max(4, Math.round(files / 25));
    for (let i = 0; i < dirCount; i++) {
      let p = rnd.int(0, dirs.length - 1);
      while (depth[p] >= 6) p = rnd.int(0, dirs.length - 1);
      dirs.push(`${dirs[p] ? `${dirs[p]}/` : ''}d${i.toString(36)}`);
      depth.push(depth[p] + 1);
    }
    const sizeOf = () => Math.round(Math.exp(Math.log(100) + rnd() * (Math.log(65536) - Math.log(100))));
    const entry = (i) => {
      const binary = i % 3 === 0;
      return { path: `${dirs[rnd.int(0, dirs.length - 1)] || '.'}/f${i.toString(36)}.${binary ? 'bin' : 'js'}`.replace(/^\.\//, ''), binary, size: sizeOf() };
    };
    const content = (e, seed) => (e.binary ? keystream(seed)(e.size) : textBytes(e.size, seed));
    const write = (base, rel, data, mtime) => {
      const abs = join(base, rel);
      mkdirSync(dirname(abs), { recursive: true });
      const fd = openSync(abs, 'w', 0o644);
      writeSync(fd, data);
      closeSync(fd);
      utimesSync(abs, mtime, mtime);
    };
    const v1 = join(d, 'v1');
    const list = [];
    for (let i = 0; i < files; i++) {
      const e = entry(i);
      list.push(e);
      write(v1, e.path, content(e, `tree-${i}`), V1_MTIME);
    }
    for (const x of dirs) mkdirSync(join(v1, x), { recursive: true });

    // v2: a copy with mtimes kept (rsync's quick check must see unchanged files as unchanged).
    const v2 = join(d, 'v2');
    await exec('cp', ['-a', v1, v2]);
    const order = list.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = rnd.int(0, i);
      [order[i], order[j]] = [order[j], order[i]];
    }
    const changed = order.slice(0, Math.max(1, Math.round(files * 0.01)));
    const deleted = order.slice(changed.length, changed.length + Math.max(1, Math.round(files * 0.005)));
    for (const i of changed) {
      const e = list[i];
      const old = readFileSync(join(v2, e.path));
      // Rewrite one span of up to 256 bytes with up to 64 more bytes, as a rebuilt file would.
      const at = rnd.int(0, Math.max(0, old.length - 1));
      const cut = Math.min(old.length - at, rnd.int(1, 256));
      const fresh = content({ ...e, size: cut + rnd.int(0, 64) }, `tree-${i}-v2`);
      write(v2, e.path, Buffer.concat([old.subarray(0, at), fresh, old.subarray(at + cut)]), V2_MTIME);
    }
    for (const i of deleted) rmrf(join(v2, list[i].path));
    for (let i = files; i < files + added; i++) {
      const e = entry(i);
      write(v2, e.path, content(e, `tree-${i}`), V2_MTIME);
    }
    writeFileSync(join(d, 'summary.json'), JSON.stringify({ files, changed: changed.length, deleted: deleted.length, added, dirs: dirs.length }));
  });
  const summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'));
  return { dir, v1: join(dir, 'v1'), v2: join(dir, 'v2'), summary };
}

/**
 * Two consecutive published releases of an npm package, fetched with `npm pack` (cached as
 * tarballs under root/real) and unpacked with distinct fixed mtimes (npm tarballs carry one
 * constant mtime, which would make rsync's quick check skip changed files of equal size).
 */
export async function ensureRelease(root, name, version, mtime, log) {
  const dir = join(root, 'real');
  mkdirSync(dir, { recursive: true });
  const base = `${name.replace(/^@/, '').replace('/', '-')}-${version}`;
  const tgz = join(dir, `${base}.tgz`);
  if (!existsSync(tgz)) {
    log(`npm pack ${name}@${version}`);
    const tmp = join(dir, `.pack-${process.pid}`);
    rmrf(tmp);
    mkdirSync(tmp);
    await exec('npm', ['pack', `${name}@${version}`, '--pack-destination', tmp, '--ignore-scripts', '--silent'], { cwd: tmp });
    const [file] = readdirSync(tmp).filter((f) => f.endsWith('.tgz'));
    if (!file) throw new Error(`npm pack ${name}@${version} wrote no tarball`);
    renameSync(join(tmp, file), tgz);
    rmrf(tmp);
  }
  const out = await cached(join(dir, base), { kind: 'release', name, version, mtime, tgz: statSync(tgz).size }, async (d) => {
    const tree = join(d, 'tree');
    mkdirSync(tree);
    execFileSync('tar', ['-xzf', tgz, '-C', tree, '--strip-components=1', '--no-same-owner']);
    execFileSync('find', [tree, '-exec', 'touch', '-h', '-d', `@${mtime}`, '{}', '+']);
  });
  return join(out, 'tree');
}

export const RELEASE_MTIMES = { old: V1_MTIME, new: V2_MTIME };

/**
 * tree2 (issue 15): the shape of a rebuilt application: `files` files of 512 B - 96 KiB
 * (log-uniform, ~18 KiB on average, ~370 MB for 20,000), a third incompressible, in nested
 * directories (v1). v2 is a *rebuild*, as CI produces one: every file written again with a fresh
 * mtime, 1% of them with changed content (a span rewritten), none added or deleted.
 */
export async function ensureRebuildTree(root, files, log) {
  const spec = { kind: 'tree2', files };
  const dir = await cached(join(root, `tree2-${files}`), spec, async (d) => {
    log(`generating rebuild-tree data: ${files} files`);
    const rnd = prng(`bench-tree2-${files}`);
    const dirs = [''];
    const depth = [0];
    for (let i = 0, n = Math.max(4, Math.round(files / 30)); i < n; i++) {
      let p = rnd.int(0, dirs.length - 1);
      while (depth[p] >= 7) p = rnd.int(0, dirs.length - 1);
      dirs.push(`${dirs[p] ? `${dirs[p]}/` : ''}m${i.toString(36)}`);
      depth.push(depth[p] + 1);
    }
    const lo = Math.log(512);
    const hi = Math.log(96 * 1024);
    const list = [];
    for (let i = 0; i < files; i++) {
      const binary = i % 3 === 0;
      const at = dirs[rnd.int(0, dirs.length - 1)];
      list.push({ path: `${at ? `${at}/` : ''}c${i.toString(36)}.${binary ? 'wasm' : 'js'}`, binary, size: Math.round(Math.exp(lo + rnd() * (hi - lo))) });
    }
    const content = (e, seed, size = e.size) => (e.binary ? keystream(seed)(size) : textBytes(size, seed));
    const write = (base, rel, data, mtime) => {
      const abs = join(base, rel);
      mkdirSync(dirname(abs), { recursive: true });
      const fd = openSync(abs, 'w', 0o644);
      writeSync(fd, data);
      closeSync(fd);
      utimesSync(abs, mtime, mtime);
    };
    const changed = new Set();
    while (changed.size < Math.max(1, Math.round(files * 0.01))) changed.add(rnd.int(0, files - 1));
    let bytes = 0;
    list.forEach((e, i) => {
      const data = content(e, `tree2-${i}`);
      bytes += data.length;
      write(join(d, 'v1'), e.path, data, V1_MTIME);
      let next = data;
      if (changed.has(i)) {
        const at = rnd.int(0, Math.max(0, data.length - 1));
        const cut = Math.min(data.length - at, rnd.int(1, 512));
        next = Buffer.concat([data.subarray(0, at), content(e, `tree2-${i}-v2`, cut + rnd.int(0, 64)), data.subarray(at + cut)]);
      }
      // Every file of the rebuild is new on disk: written again, with the build's time.
      write(join(d, 'v2'), e.path, next, V2_MTIME + (i % 60));
    });
    writeFileSync(join(d, 'summary.json'), JSON.stringify({ files, changed: changed.size, deleted: 0, added: 0, bytes, dirs: dirs.length }));
  });
  const summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'));
  return { dir, v1: join(dir, 'v1'), v2: join(dir, 'v2'), summary };
}
