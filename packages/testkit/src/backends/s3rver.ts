// A real S3-compatible backend for tests: npm `s3rver` as a child process on 127.0.0.1, with its
// data in a fresh temp directory that stop() removes. Its quirks, which the s3 driver's switches
// (see driverOptions) work around: it ignores `If-None-Match` on PUT; a PUT truncates the live
// object and writes it in place, so concurrent writers interleave and readers see partial bytes;
// a `Delimiter=/` listing drops keys two or more levels below the prefix; `bytes=0-0` reads the
// whole object and suffix ranges (`bytes=-N`) are not implemented; long listings are paged in
// file-name order, which differs from key order for some keys; and it stores the aws-chunked
// framing of a streamed upload as the object's bytes, so the SDK must set
// requestChecksumCalculation (and responseChecksumValidation) to 'WHEN_REQUIRED'.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { guardChild, waitForLine } from './process.js';

export interface S3rverOptions {
  /** Bucket created at start-up. Default: a random `kk-test-<hex>`. */
  bucket?: string;
  /** How long to wait for the server to listen. Default: 20 s. */
  startTimeoutMs?: number;
}

export interface S3rverBackend {
  /** `http://127.0.0.1:<port>`. */
  endpoint: string;
  bucket: string;
  region: string;
  /** The only credentials s3rver accepts (it checks the access key id, not SigV4 signatures). */
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** Environment for a child process (the `kk` CLI) to reach this backend through the AWS chain. */
  env: Record<string, string>;
  /** A store URL for the s3 driver under `prefix` (no leading or trailing `/` needed). */
  storeUrl(prefix?: string): string;
  /** The same as options for the s3 driver's factory (`createS3Driver`). */
  driverOptions(prefix?: string): S3rverDriverOptions;
  /** Kill the server and remove its data. Idempotent. */
  stop(): Promise<void>;
}

/** The s3 driver's switches for s3rver's quirks, as URL parameters. */
const S3RVER_DRIVER_SWITCHES = { conditional_writes: 'false', atomic_puts: 'false', delimiter_listing: 'false' };
export interface S3rverDriverOptions {
  bucket: string;
  prefix: string;
  endpoint: string;
  region: string;
  pathStyle: true;
  credentials: { accessKeyId: string; secretAccessKey: string };
  conditionalWrites: false;
  atomicPuts: false;
  delimiterListing: false;
}

const WATCHDOG = `data:text/javascript,${encodeURIComponent("process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();")}`;
const CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
const REGION = 'us-east-1';

/** Why s3rver cannot run here (its package is not installed), or undefined when it can. */
export function s3rverUnavailable(): string | undefined {
  try {
    s3rverBin();
    return undefined;
  } catch (err) {
    return `npm package s3rver is not installed (${(err as Error).message}); run npm ci at the repository root`;
  }
}

/** Starts s3rver with one bucket. Rejects, with the server's output, if it does not come up. */
export async function startS3rver(opts: S3rverOptions = {}): Promise<S3rverBackend> {
  const bin = s3rverBin();
  const bucket = opts.bucket ?? `kk-test-${randomBytes(4).toString('hex')}`;
  const dir = await mkdtemp(path.join(tmpdir(), 'kk-s3rver-'));
  // s3rver encrypts continuation tokens with a cipher that OpenSSL 3 keeps in its legacy
  // provider. The preloaded watchdog ends the server when our end of its stdin closes, so a
  // test process that dies without stop() (killed, crashed) leaves no server behind.
  const args = ['--openssl-legacy-provider', '--import', WATCHDOG, bin, '-d', dir, '-a', '127.0.0.1', '-p', '0', '--silent', '--configure-bucket', bucket];
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  const stop = guardChild(child, () => rm(dir, { recursive: true, force: true }));
  // The pipe must not keep this process alive, nor an unread error on it crash it.
  child.stdin!.on('error', () => {});
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  let port: number;
  try {
    port = Number((await waitForLine(child, 's3rver', /listening on [^\s:]+:(\d+)/i, opts.startTimeoutMs ?? 20_000))[1]);
  } catch (err) {
    await stop();
    throw err;
  }
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    bucket,
    region: REGION,
    credentials: { ...CREDENTIALS },
    env: { AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey, AWS_REGION: REGION },
    storeUrl(prefix = '') {
      const q = new URLSearchParams({ endpoint, region: REGION, path_style: 'true', ...S3RVER_DRIVER_SWITCHES });
      return `s3://${bucket}/${prefix.replace(/^\/+|\/+$/g, '')}?${q}`;
    },
    driverOptions(prefix = '') {
      return {
        bucket,
        prefix: prefix.replace(/^\/+|\/+$/g, ''),
        endpoint,
        region: REGION,
        pathStyle: true,
        credentials: { ...CREDENTIALS },
        conditionalWrites: false,
        atomicPuts: false,
        delimiterListing: false,
      };
    },
    stop,
  };
}

function s3rverBin(): string {
  const pkg = createRequire(import.meta.url).resolve('s3rver/package.json');
  const bin = path.join(path.dirname(pkg), 'bin', 's3rver.js');
  if (!existsSync(bin)) throw new Error(`${bin} is missing`);
  return bin;
}

