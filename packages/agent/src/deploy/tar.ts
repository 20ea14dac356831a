// `tar`: a .tar.gz into a kk-managed directory. The archive's digest is checked first
// (uploading 0-30), then the WHOLE archive is read once and refused (UNSAFE_PATH) if any entry
// is absolute, climbs out with `..`, is a link (symlinks may only point inside the tree;
// hardlinks only to earlier entries), a device, a FIFO or anything else than a file or a
// directory, so nothing is written for a bad archive. Then it is extracted into a staging
// directory beside the target (30-60), swapped in by renames (the old tree kept as
// `<path>.kk-previous`), and the install script runs in it (60-90). Rollback swaps the
// previous tree back.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, lstat, mkdir, open, rename, rm, stat, symlink, link } from 'node:fs/promises';
import * as path from 'node:path';
import { createGunzip } from 'node:zlib';
import { type Digest, KkError, type StoreSource } from '@kk/core';
import type { AppliedResult, DeployKind, KindContext } from './runner.js';
import { checkScript, runScript } from './script.js';
import { PROGRESS, type TarSpec } from './types.js';
import { fetchUpload } from './upload.js';

export interface TarKindEnv {
  /** Where uploads are read from. */
  store?: StoreSource;
}

export interface TarEntry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';
  typeflag: string;
  size: number;
  mode: number;
  linkname: string;
}

function field(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return (z === -1 ? s : s.subarray(0, z)).toString('utf8');
}

function octal(b: Buffer, off: number, len: number): number {
  if (b[off]! & 0x80) {
    let n = 0;
    for (let i = off + 1; i < off + len; i++) n = n * 256 + b[i]!;
    return n;
  }
  const s = field(b, off, len).trim();
  return s ? parseInt(s, 8) : 0;
}

function parsePax(buf: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < buf.length) {
    const sp = buf.indexOf(0x20, i);
    if (sp === -1) break;
    const len = parseInt(buf.subarray(i, sp).toString(), 10);
    if (!(len > 0)) break;
    const rec = buf.subarray(sp + 1, i + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    i += len;
  }
  return out;
}

/**
 * Stream the entries of a .tar.gz: `onEntry` gets each header and, for files, must consume the
 * data through `body` chunks (called in order) before the next entry. Memory stays bounded.
 */
export async function readTarGz(file: string, onEntry: (e: TarEntry) => Promise<((chunk: Buffer) => Promise<void>) | void>): Promise<void> {
  const gz = createReadStream(file).pipe(createGunzip());
  let buf: Buffer = Buffer.alloc(0);
  let state: 'header' | 'data' | 'pad' | 'meta' = 'header';
  let remaining = 0;
  let pad = 0;
  let sink: ((c: Buffer) => Promise<void>) | void = undefined;
  let meta: Buffer[] = [];
  let metaType = '';
  let pax: Record<string, string> = {};
  let longName: string | undefined;
  let longLink: string | undefined;
  let ended = false;
  for await (const chunk of gz as AsyncIterable<Buffer>) {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      if (ended) break;
      if (state === 'header') {
        if (buf.length < 512) break;
        const h = buf.subarray(0, 512);
        buf = buf.subarray(512);
        if (h.every((x) => x === 0)) {
          ended = true;
          break;
        }
        const typeflag = String.fromCharCode(h[156] || 0x30);
        const size = octal(h, 124, 12);
        pad = (512 - (size % 512)) % 512;
        remaining = size;
        if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
          if (size > 1024 * 1024) throw new KkError('UNSAFE_PATH', 'the archive has an oversized extended header', { hint: 'create the archive with a standard tar' });
          metaType = typeflag;
          meta = [];
          state = 'meta';
          continue;
        }
        const prefix = field(h, 345, 155);
        let name = longName ?? pax.path ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100));
        const linkname = longLink ?? pax.linkpath ?? field(h, 157, 100);
        if (pax.size) remaining = parseInt(pax.size, 10);
        pad = (512 - (remaining % 512)) % 512;
        longName = longLink = undefined;
        pax = {};
        const type: TarEntry['type'] = typeflag === '0' || typeflag === '\0' || typeflag === '7' ? 'file' : typeflag === '5' ? 'dir' : typeflag === '2' ? 'symlink' : typeflag === '1' ? 'hardlink' : 'other';
        if (type === 'dir') name = name.replace(/\/+$/, '');
        sink = await onEntry({ name, type, typeflag, size: remaining, mode: octal(h, 100, 8) & 0o7777, linkname });
        state = 'data';
        continue;
      }
      if (state === 'meta' || state === 'data') {
        if (remaining > 0) {
          if (!buf.length) break;
          const take = buf.subarray(0, Math.min(remaining, buf.length));
          buf = buf.subarray(take.length);
          remaining -= take.length;
          if (state === 'meta') meta.push(Buffer.from(take));
          else if (sink) await sink(take);
          if (remaining > 0) break;
        }
        if (state === 'meta') {
          const body = Buffer.concat(meta);
          if (metaType === 'x') pax = parsePax(body);
          else if (metaType === 'L') longName = field(body, 0, body.length);
          else if (metaType === 'K') longLink = field(body, 0, body.length);
        }
        state = 'pad';
        continue;
      }
      if (state === 'pad') {
        if (buf.length < pad) {
          pad -= buf.length;
          buf = Buffer.alloc(0);
          break;
        }
        buf = buf.subarray(pad);
        pad = 0;
        state = 'header';
        continue;
      }
    }
    if (ended) break;
  }
  gz.destroy();
  if (!ended && (state !== 'header' || buf.length)) throw new KkError('CHUNK_CORRUPT', `${file} ends in the middle of an entry`, { hint: 'upload the archive again' });
}

/** The normalized relative path of an entry, or why it is refused. */
function safeName(name: string): string | { why: string } {
  if (!name || name.includes('\0')) return { why: 'an empty name' };
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) return { why: 'an absolute path' };
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return { why: 'a path with ..' };
  return parts.join('/');
}

/** Read the whole archive and refuse it before anything is written. Returns entry count and bytes. */
export async function validateTarGz(file: string): Promise<{ entries: number; bytes: number }> {
  const seen = new Set<string>();
  let entries = 0;
  let bytes = 0;
  const refuse = (n: string, why: string) => {
    throw new KkError('UNSAFE_PATH', `the archive entry ${JSON.stringify(n)} is ${why}: nothing was extracted`, { hint: 'rebuild the archive with relative paths inside one directory and no links out' });
  };
  await readTarGz(file, async (e) => {
    entries++;
    const n = safeName(e.name);
    if (typeof n !== 'string') return refuse(e.name, n.why);
    if (e.type === 'other') return refuse(e.name, `of a type kk does not extract (typeflag ${JSON.stringify(e.typeflag)}: device, fifo or unknown)`);
    if (e.type === 'symlink') {
      if (e.linkname.startsWith('/')) return refuse(e.name, `a symlink to the absolute path ${e.linkname}`);
      const to = path.posix.normalize(path.posix.join(path.posix.dirname(n), e.linkname));
      if (to === '..' || to.startsWith('../')) return refuse(e.name, `a symlink pointing out of the directory (${e.linkname})`);
    }
    if (e.type === 'hardlink') {
      const to = safeName(e.linkname);
      if (typeof to !== 'string' || !seen.has(to)) return refuse(e.name, `a hard link to something outside the archive (${e.linkname})`);
    }
    // A path through an earlier symlink could lead out: refuse entries below a symlink.
    for (const s of seen) if (s.startsWith('L:') && n.startsWith(`${s.slice(2)}/`)) return refuse(e.name, `below the symlink ${s.slice(2)}`);
    seen.add(n);
    if (e.type === 'symlink') seen.add(`L:${n}`);
    bytes += e.type === 'file' ? e.size : 0;
    return undefined;
  });
  return { entries, bytes };
}

async function extract(file: string, into: string, total: number, progress: (done: number) => void): Promise<void> {
  let done = 0;
  await mkdir(into, { recursive: true, mode: 0o755 });
  await readTarGz(file, async (e) => {
    const n = safeName(e.name) as string;
    const dest = n ? path.join(into, n) : into;
    if (e.type === 'dir') {
      await mkdir(dest, { recursive: true });
      await chmod(dest, (e.mode & 0o777) | 0o700);
      return undefined;
    }
    await mkdir(path.dirname(dest), { recursive: true });
    if (e.type === 'symlink') {
      await symlink(e.linkname, dest);
      return undefined;
    }
    if (e.type === 'hardlink') {
      await link(path.join(into, safeName(e.linkname) as string), dest);
      return undefined;
    }
    const h = await open(dest, 'wx', (e.mode & 0o777) | 0o600);
    if (e.size === 0) {
      await h.close();
      return undefined;
    }
    let left = e.size;
    return async (chunk: Buffer) => {
      await h.write(chunk);
      done += chunk.length;
      left -= chunk.length;
      progress(done / Math.max(1, total));
      if (left <= 0) await h.close();
    };
  });
}

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

export class TarKind implements DeployKind {
  constructor(
    private readonly spec: TarSpec,
    private readonly env: TarKindEnv = {},
  ) {}

  private get target() {
    return path.resolve(this.spec.path);
  }

  check(): void {
    if (this.spec.install_script !== undefined) checkScript(this.spec.install_script, 'install script');
    if ((!this.spec.file && !this.spec.upload) || !this.spec.path) throw new KkError('CONFIG_INVALID', 'a tar deploy needs a file (or an upload) and a path', { hint: 'give the archive and the directory' });
    if (this.spec.upload && !this.env.store) throw new KkError('CONFIG_MISSING', 'a tar deploy of an upload needs the store to read it from');
  }

  /** The upload's archive, fetched through the store into the deploy's scratch directory (uploading 0-30). */
  private async fetch(ctx: KindContext): Promise<{ file: string; digest: string }> {
    const s = this.env.store!;
    const store = typeof s === 'function' ? await s() : s;
    await mkdir(ctx.scratch, { recursive: true });
    const file = path.join(ctx.scratch, 'archive.tar.gz');
    await ctx.status('uploading', PROGRESS.uploading[0], `receiving upload ${this.spec.upload}`);
    let last = 0;
    let pending = Promise.resolve();
    const list = await fetchUpload(store, this.spec.upload as Digest, file, {
      ...(this.spec.sha256 ? { expectSha256: this.spec.sha256.toLowerCase() } : {}),
      signal: ctx.signal,
      onProgress: (done, total) => {
        const p = Math.floor((done / Math.max(1, total)) * 30);
        if (p >= last + 5) {
          last = p;
          pending = pending.then(() => ctx.status('uploading', p));
        }
      },
    });
    await pending;
    ctx.log(`received ${list.name} (${list.size} bytes, ${list.chunks.length} chunks, sha256 ${list.sha256})`);
    return { file, digest: list.sha256 };
  }

  async apply(ctx: KindContext): Promise<AppliedResult> {
    let file: string;
    let digest: string;
    if (this.spec.upload) ({ file, digest } = await this.fetch(ctx));
    else {
      file = this.spec.file!;
      const size = (await stat(file)).size;
      await ctx.status('uploading', PROGRESS.uploading[0], `checking ${path.basename(file)} (${size} bytes)`);
      const hash = createHash('sha256');
      let read = 0;
      let last = 0;
      for await (const c of createReadStream(file) as AsyncIterable<Buffer>) {
        hash.update(c);
        read += c.length;
        const p = Math.floor((read / Math.max(1, size)) * 30);
        if (p >= last + 5) {
          last = p;
          await ctx.status('uploading', p);
        }
      }
      digest = hash.digest('hex');
    }
    if (this.spec.sha256 && this.spec.sha256.toLowerCase() !== digest) {
      throw new KkError('CHUNK_CORRUPT', `the archive's sha256 is ${digest}, not ${this.spec.sha256}`, { hint: 'upload it again' });
    }
    await ctx.save({ version: digest });
    await ctx.status('extracting', PROGRESS.extracting[0], 'checking every entry');
    const { entries, bytes } = await validateTarGz(file);
    const staging = `${this.target}.kk-staging`;
    const previous = `${this.target}.kk-previous`;
    await rm(staging, { recursive: true, force: true });
    let lastP = 30;
    const pending: Promise<void>[] = [];
    await extract(file, staging, bytes, (f) => {
      const p = 30 + Math.floor(f * 30);
      if (p >= lastP + 5) {
        lastP = p;
        pending.push(ctx.status('extracting', p));
      }
    });
    await Promise.all(pending);
    // Swap: the current tree becomes the previous one (replacing an older previous).
    const had = await exists(this.target);
    await ctx.save({ swapped: false, had_previous: had });
    await rm(previous, { recursive: true, force: true });
    if (had) await rename(this.target, previous);
    await rename(staging, this.target);
    await ctx.save({ swapped: true });
    ctx.log(`extracted ${entries} entries (${bytes} bytes) into ${this.target}`);
    if (this.spec.install_script) {
      await ctx.status('installing', PROGRESS.installing[0], 'running the install script');
      const r = await runScript(this.spec.install_script, { cwd: this.target, ...(this.spec.env ? { env: this.spec.env } : {}), log: (l, s) => ctx.log(`install ${s}: ${l}`), signal: ctx.signal, onSpawn: (pid) => ctx.track(pid) });
      if (r.code !== 0) throw new KkError('BACKEND', `the install script exited with ${r.signal ?? r.code}`, { hint: 'see the deploy logs' });
    }
    await ctx.status('installing', PROGRESS.installing[1], 'installed');
    if (this.spec.upload) await rm(file, { force: true });
    return { result: { sha256: digest, entries, bytes, path: this.target }, version: digest };
  }

  async rollback(ctx: KindContext): Promise<{ to?: string }> {
    const previous = `${this.target}.kk-previous`;
    await rm(`${this.target}.kk-staging`, { recursive: true, force: true });
    if (!ctx.saved.swapped) return { to: 'unchanged' };
    if (!ctx.saved.had_previous) {
      await rm(this.target, { recursive: true, force: true });
      return { to: 'empty' };
    }
    if (!(await exists(previous))) throw new KkError('NOTHING_TO_ROLLBACK', `${previous} is gone`, { hint: 'deploy a known good archive' });
    const failed = `${this.target}.kk-failed`;
    await rm(failed, { recursive: true, force: true });
    await rename(this.target, failed);
    await rename(previous, this.target);
    await rm(failed, { recursive: true, force: true });
    await ctx.save({ swapped: false });
    return { to: 'previous tree' };
  }
}
