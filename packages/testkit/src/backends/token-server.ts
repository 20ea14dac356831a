// A small token server for registry tests (the Docker registry token spec): GET /token with
// Basic credentials (or none: anonymous pull), POST /token with an OAuth2 refresh token; answers
// an RS256 JWT carrying the certificate in `x5c`, which the registry checks against the
// certificate file given to it as `rootcertbundle`. Runs on 127.0.0.1; the key and certificate
// live in a temp directory that stop() removes.
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes, sign, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

export interface TokenServerOptions {
  /** user -> password. */
  users?: Record<string, string>;
  /** identity (refresh) token -> user, for the OAuth2 POST flow. */
  refreshTokens?: Record<string, string>;
  /** Grant `pull` to requests without credentials. Default false. */
  anonymousPull?: boolean;
  /** Token lifetime in seconds. Default 300. */
  expiresIn?: number;
}

export interface TokenServer {
  /** The realm URL for the registry's `auth.token.realm`. */
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate file for the registry's `auth.token.rootcertbundle`. */
  certFile: string;
  /** Every token request answered or refused, in order. */
  requests: { user: string | undefined; scopes: string[]; granted: string[]; status: number }[];
  stop(): Promise<void>;
}

export async function startTokenServer(opts: TokenServerOptions = {}): Promise<TokenServer> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kk-token-'));
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await promisify(execFile)('openssl', ['req', '-x509', '-new', '-key', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=kk-test-token-issuer']);
  const der = new X509Certificate(await readFile(certFile)).raw.toString('base64');
  const service = 'kk-test-registry';
  const issuer = 'kk-test-token-issuer';
  const requests: TokenServer['requests'] = [];
  const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

  const issue = (user: string | undefined, scopes: string[]) => {
    const access: { type: string; name: string; actions: string[] }[] = [];
    for (const scope of scopes) {
      const m = /^repository:([^:]+):(.+)$/.exec(scope);
      if (!m) continue;
      const asked = m[2]!.split(',');
      const actions = user ? asked : asked.filter((a) => a === 'pull' && opts.anonymousPull);
      if (actions.length) access.push({ type: 'repository', name: m[1]!, actions });
    }
    const now = Math.floor(Date.now() / 1000);
    const life = opts.expiresIn ?? 300;
    const claims = { iss: issuer, sub: user ?? '', aud: service, exp: now + life, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access };
    const head = b64({ typ: 'JWT', alg: 'RS256', x5c: [der] });
    const body = b64(claims);
    const sig = sign('sha256', Buffer.from(`${head}.${body}`), privateKey).toString('base64url');
    return { token: `${head}.${body}.${sig}`, granted: access.map((a) => `${a.name}:${a.actions.join(',')}`), life };
  };

  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const reply = (status: number, value: unknown, user: string | undefined, scopes: string[], granted: string[] = []) => {
      requests.push({ user, scopes, granted, status });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    if (url.pathname !== '/token') return reply(404, { error: 'not found' }, undefined, []);
    let user: string | undefined;
    let scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' '));
    if (req.method === 'POST') {
      const form = new URLSearchParams(await readBody(req));
      scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
      user = opts.refreshTokens?.[form.get('refresh_token') ?? ''];
      if (form.get('grant_type') !== 'refresh_token' || !user) return reply(401, { error: 'invalid_grant' }, undefined, scopes);
    } else {
      const auth = req.headers.authorization;
      if (auth) {
        const [name, ...rest] = Buffer.from(auth.replace(/^Basic\s+/i, ''), 'base64').toString('utf8').split(':');
        if (!name || opts.users?.[name] === undefined || opts.users[name] !== rest.join(':')) return reply(401, { error: 'bad credentials' }, name, scopes);
        user = name;
      } else if (!opts.anonymousPull) {
        return reply(401, { error: 'credentials required' }, undefined, scopes);
      }
    }
    const t = issue(user, scopes);
    reply(200, { token: t.token, access_token: t.token, expires_in: t.life, issued_at: new Date().toISOString() }, user, scopes, t.granted);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  let stopped: Promise<void> | undefined;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certFile,
    requests,
    stop: () =>
      (stopped ??= (async () => {
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
        await rm(dir, { recursive: true, force: true });
      })()),
  };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      data += c;
      if (data.length > 1 << 16) req.destroy(new Error('body too large'));
    });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}
