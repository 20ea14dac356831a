// A local pause of one deploy directory (seed 002, DESIGN 13): while it holds, every pull on this
// machine into that directory is refused, whoever runs it (a person, a script, `kk agent`) and
// whatever state dir it uses. The record lives inside the directory, in the top-level name kk
// reserves there (`.kk-staging/paused.json`), so no user or --state-dir can miss it; pulls never
// write or delete it, and walks and verify skip the reserved name.
import { lstat, mkdir, readFile, rmdir, unlink } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { KkError } from '../errors.js';
import { RESERVED_TOP_LEVEL } from '../manifest.js';
import { writeFileAtomic } from '../state.js';
import { resolveTarget } from './pull.js';

export const PAUSE_FILE = 'paused.json';

export interface LocalPause {
  format: 'kk-pause/1';
  /** The directory, as resolved when it was paused. */
  target: string;
  reason: string;
  /** Who paused it: `user@host` unless the caller names someone. */
  by: string;
  since: string;
}

const pauseFile = (realTarget: string) => join(realTarget, RESERVED_TOP_LEVEL, PAUSE_FILE);

/** The pause of the directory whose real path is `realTarget`, if any. */
export async function readLocalPause(realTarget: string): Promise<LocalPause | undefined> {
  // The reserved directory must be a directory: a symlink planted there leads nowhere.
  const st = await lstat(join(realTarget, RESERVED_TOP_LEVEL)).catch(() => undefined);
  if (!st?.isDirectory()) return undefined;
  let text: string;
  try {
    text = await readFile(pauseFile(realTarget), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const p = JSON.parse(text) as LocalPause;
    if (p && typeof p.reason === 'string') return p;
  } catch {
    // A torn or foreign file still means someone wanted this directory left alone.
  }
  return { format: 'kk-pause/1', target: realTarget, reason: '(unreadable pause record)', by: 'unknown', since: '' };
}

/** Refuse (PAUSED) when the directory is paused: names who paused it, when and why. */
export async function assertNotPaused(realTarget: string): Promise<void> {
  const p = await readLocalPause(realTarget);
  if (!p) return;
  throw new KkError('PAUSED', `${realTarget} is paused by ${p.by}${p.since ? ` since ${p.since}` : ''}: ${p.reason}`, {
    hint: `nothing was changed; run \`kk resume --path ${realTarget}\` when it may be deployed to again`,
    details: { target: realTarget, by: p.by, since: p.since, reason: p.reason },
  });
}

/**
 * Pause the directory (created when missing, so it can be protected before its first deploy).
 * Pausing an already paused directory replaces the record. A pull already running finishes its
 * staging but checks again before it changes anything, and stops there.
 */
export async function pauseLocal(opts: { target: string; reason: string; by?: string }): Promise<LocalPause> {
  const reason = opts.reason.trim();
  if (!reason) throw new KkError('CONFIG_INVALID', 'a pause needs a reason', { hint: 'pass --reason "why"' });
  const { given, real } = await resolveTarget(opts.target);
  await mkdir(given, { recursive: true });
  const dir = join(real, RESERVED_TOP_LEVEL);
  const st = await lstat(dir).catch(() => undefined);
  if (st && !st.isDirectory()) await unlink(dir);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const p: LocalPause = { format: 'kk-pause/1', target: real, reason, by: opts.by ?? whoami(), since: new Date().toISOString() };
  await writeFileAtomic(pauseFile(real), JSON.stringify(p, null, 1));
  return p;
}

/** Lift the pause. Returns the record that was removed, or undefined when the directory was not paused. */
export async function resumeLocal(opts: { target: string }): Promise<LocalPause | undefined> {
  const { real } = await resolveTarget(opts.target);
  const p = await readLocalPause(real);
  if (!p) return undefined;
  await unlink(pauseFile(real)).catch((err) => {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  });
  await rmdir(join(real, RESERVED_TOP_LEVEL)).catch(() => {});
  return p;
}

function whoami(): string {
  let user = process.env.USER ?? '';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (containers): the environment's name, or none
  }
  return `${user || `uid ${process.getuid?.() ?? '?'}`}@${hostname()}`;
}
