// `.kkartifact.yml` (seed 001 7.0 and 7.5). Required for push and pull: a missing file stops
// the command before anything is read or written, so a typo never syncs the wrong tree.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { KkError } from './errors.js';
import { parseSize } from './chunking.js';

let parseYaml: typeof import('yaml').parse | undefined;

export type SymlinkPolicy = 'error' | 'skip' | 'follow';

export interface KkConfig {
  /** Absolute path of the file this came from. */
  path: string;
  /** Store URL (`store`, or the seed's `server_url`). */
  store?: string;
  token?: string;
  /** Parallel transfers. Default 8. */
  concurrency: number;
  /** Average chunk size for a store this push creates. */
  chunkSize?: number;
  /** Keep the newest N versions of the pushed app. */
  retainVersions?: number;
  /** gitignore-syntax patterns, relative to the pushed or deployed directory. */
  ignore: string[];
  /** Symlinks in the pushed directory: refuse (default), skip, or follow. */
  symlinks: SymlinkPolicy;
  /** Stores a pull tries in order when the store fails with a backend error (seed 004). */
  fallbackStores?: string[];
  /** At most this many store read requests a second (seed 004 `rate_limit`). */
  rateLimit?: number;
}

export const CONFIG_FILE = '.kkartifact.yml';

export const MINIMAL_CONFIG_EXAMPLE = `store: /var/lib/kk/store   # or server_url: https://kk.example.com
ignore:
  - logs/
  - '*.log'
`;

const KEYS = new Set(['store', 'server_url', 'token', 'concurrency', 'chunk_size', 'retain_versions', 'ignore', 'symlinks', 'fallback_stores', 'rate_limit']);

export async function loadConfig(path = CONFIG_FILE): Promise<KkConfig> {
  const abs = resolve(path);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new KkError('CONFIG_MISSING', `config file ${abs} does not exist; kk refuses to push or pull without it`, {
        hint: `create it, for example:\n${MINIMAL_CONFIG_EXAMPLE}`,
        details: { path: abs },
      });
    }
    throw new KkError('CONFIG_INVALID', `cannot read config file ${abs}: ${(err as Error).message}`, { cause: err });
  }
  return parseConfig(text, abs);
}

export function parseConfig(text: string, path: string): KkConfig {
  let raw: unknown;
  try {
    // yaml loads on first use: most commands read no config file, and its module graph is the
    // largest single import of a `kk pull` (measured by the ssh-pull work, issue 14).
    parseYaml ??= (createRequire(import.meta.url)('yaml') as typeof import('yaml')).parse;
    raw = parseYaml(text) ?? {};
  } catch (cause) {
    throw new KkError('CONFIG_INVALID', `${path} is not valid YAML: ${(cause as Error).message}`, { cause });
  }
  if (typeof raw !== 'object' || Array.isArray(raw)) throw invalid(path, 'the top level must be a mapping');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KEYS.has(k)) throw invalid(path, `unknown key "${k}" (known: ${[...KEYS].join(', ')})`);
  const str = (k: string): string | undefined => {
    const v = o[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string' || v.length === 0) throw invalid(path, `${k} must be a non-empty string`);
    return v;
  };
  const int = (k: string, min: number): number | undefined => {
    const v = o[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw invalid(path, `${k} must be an integer >= ${min}`);
    return v;
  };
  const store = str('store');
  const serverUrl = str('server_url');
  if (store && serverUrl && store !== serverUrl) throw invalid(path, 'store and server_url name different stores; keep one');
  const ignore = o.ignore ?? [];
  if (!Array.isArray(ignore) || ignore.some((p) => typeof p !== 'string')) throw invalid(path, 'ignore must be a list of patterns');
  const symlinks = (o.symlinks ?? 'error') as SymlinkPolicy;
  if (!['error', 'skip', 'follow'].includes(symlinks)) throw invalid(path, 'symlinks must be error, skip or follow');
  let chunkSize: number | undefined;
  if (o.chunk_size !== undefined && o.chunk_size !== null) {
    try {
      chunkSize = parseSize(o.chunk_size as string | number);
    } catch {
      throw invalid(path, 'chunk_size must be a size such as 512KB or 4MB');
    }
    if (chunkSize < 64 * 1024 || chunkSize > 16 * 1024 * 1024) throw invalid(path, 'chunk_size must be between 64KB and 16MB');
  }
  const config: KkConfig = {
    path,
    concurrency: int('concurrency', 1) ?? 8,
    ignore: ignore as string[],
    symlinks,
  };
  const storeUrl = store ?? serverUrl;
  if (storeUrl) config.store = storeUrl;
  const token = str('token');
  if (token) config.token = token;
  if (chunkSize) config.chunkSize = chunkSize;
  const retain = int('retain_versions', 1);
  if (retain) config.retainVersions = retain;
  const fallbacks = o.fallback_stores;
  if (fallbacks !== undefined && fallbacks !== null) {
    if (!Array.isArray(fallbacks) || fallbacks.some((u) => typeof u !== 'string' || u.length === 0)) throw invalid(path, 'fallback_stores must be a list of store URLs');
    if (fallbacks.length) config.fallbackStores = fallbacks as string[];
  }
  const rate = int('rate_limit', 1);
  if (rate) config.rateLimit = rate;
  return config;
}

function invalid(path: string, msg: string): KkError {
  return new KkError('CONFIG_INVALID', `${path}: ${msg}`, { details: { path } });
}
