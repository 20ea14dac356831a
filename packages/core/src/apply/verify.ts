// Verify a deployed tree against a manifest by rehashing every file: every difference listed.
import { join, resolve } from 'node:path';
import type { Hasher } from '../hash/pool.js';
import type { Manifest } from '../manifest.js';
import { makeIgnore } from '../scan.js';
import { forEachLimit } from '../store.js';
import { walkTarget } from './walk.js';
import { IN_TARGET_STAGING } from './pull.js';

export interface VerifyProblem {
  path: string;
  problem: 'missing' | 'content' | 'mode' | 'mtime' | 'extra' | 'not-a-file' | 'not-a-dir';
  expected?: string | number;
  actual?: string | number;
}

export interface VerifyResult {
  target: string;
  version: string;
  ok: boolean;
  filesChecked: number;
  bytesHashed: number;
  problems: VerifyProblem[];
}

export async function verifyTarget(opts: { target: string; manifest: Manifest; hasher: Hasher; ignore?: string[] }): Promise<VerifyResult> {
  const target = resolve(opts.target);
  // The version's own ignore rules protect host paths as pull does.
  const ig = makeIgnore([...(opts.ignore ?? []), ...(opts.manifest.ignore ?? [])]);
  const tree = walkTarget(target, ig, new Set([IN_TARGET_STAGING]));
  const problems: VerifyProblem[] = [];
  const m = opts.manifest;
  const files = m.files.filter((f) => !ig.ignores(f.path));
  const wanted = new Set(files.map((f) => f.path));
  const dirs = new Set(m.dirs.map((d) => d.path));
  for (const f of files) for (let i = f.path.indexOf('/'); i > 0; i = f.path.indexOf('/', i + 1)) dirs.add(f.path.slice(0, i));
  let bytesHashed = 0;
  const toHash = files.filter((f) => {
    const e = tree.entries.get(f.path);
    if (!e) problems.push({ path: f.path, problem: 'missing' });
    else if (e.kind !== 'file') problems.push({ path: f.path, problem: 'not-a-file' });
    else {
      if ((e.mode & 0o7777) !== f.mode) problems.push({ path: f.path, problem: 'mode', expected: f.mode.toString(8), actual: e.mode.toString(8) });
      if (e.mtimeMs !== f.mtime) problems.push({ path: f.path, problem: 'mtime', expected: f.mtime, actual: e.mtimeMs });
      if (e.size !== f.size) problems.push({ path: f.path, problem: 'content', expected: f.sha256, actual: `size ${e.size}` });
      else return true;
    }
    return false;
  });
  const batches: (typeof files)[] = [];
  for (let i = 0; i < toHash.length; i += 64) batches.push(toHash.slice(i, i + 64));
  await forEachLimit(batches, opts.hasher.threads * 2, async (batch) => {
    const res = await opts.hasher.hashFiles(batch.map((f) => join(target, f.path)), m.chunking);
    res.forEach((r, i) => {
      const f = batch[i]!;
      if (!('sha256' in r)) problems.push({ path: f.path, problem: 'missing' });
      else {
        bytesHashed += r.size;
        if (r.sha256 !== f.sha256) problems.push({ path: f.path, problem: 'content', expected: f.sha256, actual: r.sha256 });
      }
    });
  });
  for (const [path, e] of tree.entries) {
    if (e.kind === 'dir' ? !dirs.has(path) : !wanted.has(path)) {
      problems.push({ path, problem: dirs.has(path) ? 'not-a-dir' : 'extra' });
    }
  }
  problems.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { target, version: m.version, ok: problems.length === 0, filesChecked: files.length, bytesHashed, problems };
}
