// Credentials and the token dance for OCI registries: anonymous, Basic, and the Bearer token flow
// a `WWW-Authenticate: Bearer realm=..,service=..,scope=..` challenge asks for (the Docker
// registry token spec; OAuth2 refresh tokens when a credential is an identity token). Credentials
// come from the store URL, `KK_REGISTRY_USER`/`KK_REGISTRY_PASSWORD`, or the Docker client's
// `config.json` (`DOCKER_CONFIG` or `~/.docker`): `auths`, `credHelpers` and `credsStore`.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import * as path from 'node:path';
import { request } from 'undici';
import { KkError } from '@kk/core';

export interface RegistryCredentials {
  username: string;
  /** Password, or a personal access token used as one. */
  password?: string;
  /** An OAuth2 refresh token (`identitytoken` in config.json; a helper's `<token>` user). */
  identityToken?: string;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses a `WWW-Authenticate` header value: `Bearer realm="..",service="..",scope=".."`. */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?/g;
  for (let p = re.exec(m[2]!); p; p = re.exec(m[2]!)) params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  return { scheme: m[1]!.toLowerCase(), params };
}

/**
 * Credentials for `host` from the Docker client config: `credHelpers[host]`, else `auths[host]`
 * (also under `https://host` and `http://host`), else the `credsStore` helper. Resolves
 * `undefined` when none is configured; a broken helper or config is an AUTH error.
 */
export async function dockerConfigCredentials(host: string, env: NodeJS.ProcessEnv = process.env): Promise<RegistryCredentials | undefined> {
  const dir = env.DOCKER_CONFIG || path.join(homedir(), '.docker');
  const file = path.join(dir, 'config.json');
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>; credHelpers?: Record<string, string>; credsStore?: string };
  try {
    config = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new KkError('AUTH', `cannot read the Docker config ${file}: ${(err as Error).message}`, { cause: err, hint: 'fix or remove the file, or set DOCKER_CONFIG to another directory' });
  }
  const names = [host, `https://${host}`, `http://${host}`, `https://${host}/v1/`, `https://${host}/v2/`];
  const helper = names.map((n) => config.credHelpers?.[n]).find(Boolean);
  if (helper) return credentialHelper(helper, host);
  for (const name of names) {
    const entry = config.auths?.[name];
    if (!entry) continue;
    if (entry.identitytoken) return { username: entry.username ?? '', identityToken: entry.identitytoken };
    if (entry.auth) {
      const plain = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = plain.indexOf(':');
      if (colon < 0) throw new KkError('AUTH', `the "auth" entry for ${name} in ${file} is not base64 of user:password`, { hint: 'run docker login again' });
      return { username: plain.slice(0, colon), password: plain.slice(colon + 1) };
    }
    if (entry.username && entry.password) return { username: entry.username, password: entry.password };
  }
  if (config.credsStore) return credentialHelper(config.credsStore, host);
  return undefined;
}

/** Runs `docker-credential-<name> get` with the host on stdin. Not found: `undefined`. */
function credentialHelper(name: string, host: string): Promise<RegistryCredentials | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new KkError('AUTH', `bad Docker credential helper name "${name}"`);
  const bin = `docker-credential-${name}`;
  return new Promise((resolve, reject) => {
    const child = execFile(bin, ['get'], { timeout: 30_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) {
        // Helpers answer "credentials not found in native keychain" for unknown hosts.
        if (/not found/i.test(`${stdout}${stderr}`)) return resolve(undefined);
        return reject(new KkError('AUTH', `credential helper ${bin} failed: ${(stderr || err.message).trim()}`, { cause: err, hint: `check that ${bin} is installed and works: echo ${host} | ${bin} get` }));
      }
      try {
        const out = JSON.parse(stdout) as { Username?: string; Secret?: string };
        if (!out.Secret) return resolve(undefined);
        resolve(out.Username === '<token>' ? { username: '', identityToken: out.Secret } : { username: out.Username ?? '', password: out.Secret });
      } catch (e) {
        reject(new KkError('AUTH', `credential helper ${bin} printed something that is not JSON`, { cause: e }));
      }
    });
    child.stdin?.end(host);
  });
}

/**
 * Answers registry challenges for one registry. `authorize(scope)` gives the Authorization
 * header value to send (cached per scope until the token expires); `challenged()` records a 401's
 * challenge so the next `authorize` can answer it.
 */
export class RegistryAuth {
  private challenge: Challenge | undefined;
  private readonly tokens = new Map<string, { value: string; expires: number }>();
  private credentials: Promise<RegistryCredentials | undefined> | undefined;

  constructor(
    private readonly host: string,
    private readonly insecure: boolean,
    private readonly explicit: RegistryCredentials | undefined,
    private readonly lookup: () => Promise<RegistryCredentials | undefined> = () => dockerConfigCredentials(host),
  ) {}

  challenged(header: string | undefined): void {
    const c = header ? parseChallenge(header) : undefined;
    if (!c || (c.scheme !== 'bearer' && c.scheme !== 'basic')) {
      throw new KkError('AUTH', `registry ${this.host} answered 401 without a usable challenge (${header ?? 'no WWW-Authenticate'})`, { hint: 'check the registry URL and its auth configuration' });
    }
    this.challenge = c;
  }

  /** Drops a cached token that the registry refused, so the next call fetches a new one. */
  forget(scope: string): void {
    this.tokens.delete(scope);
  }

  async authorize(scope: string): Promise<string | undefined> {
    const c = this.challenge;
    if (!c) return undefined;
    const creds = await (this.credentials ??= this.explicit ? Promise.resolve(this.explicit) : this.lookup());
    if (c.scheme === 'basic') {
      if (!creds?.password) throw new KkError('AUTH', `registry ${this.host} wants a user name and password`, { hint: 'docker login to it, or put user:password in the store URL, or set KK_REGISTRY_USER and KK_REGISTRY_PASSWORD' });
      return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    }
    const cached = this.tokens.get(scope);
    if (cached && cached.expires > Date.now()) return `Bearer ${cached.value}`;
    const token = await this.fetchToken(c.params, scope, creds);
    this.tokens.set(scope, token);
    return `Bearer ${token.value}`;
  }

  private async fetchToken(params: Record<string, string>, scope: string, creds: RegistryCredentials | undefined): Promise<{ value: string; expires: number }> {
    const realm = params.realm;
    if (!realm) throw new KkError('AUTH', `registry ${this.host} sent a Bearer challenge without a realm`);
    let url: URL;
    try {
      url = new URL(realm);
    } catch (err) {
      throw new KkError('AUTH', `registry ${this.host} sent a bad token realm "${realm}"`, { cause: err });
    }
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && this.insecure)) {
      throw new KkError('AUTH', `registry ${this.host} names a plain-http token realm ${url.origin}`, { hint: 'add ?insecure=true to the store URL only for a registry you run on a trusted network' });
    }
    const scopes = [scope, ...(params.scope && params.scope !== scope ? [params.scope] : [])];
    let res;
    try {
      if (creds?.identityToken) {
        const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'kk', scope: scopes.join(' ') });
        if (params.service) form.set('service', params.service);
        res = await request(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() });
      } else {
        if (params.service) url.searchParams.set('service', params.service);
        for (const s of scopes) url.searchParams.append('scope', s);
        const headers: Record<string, string> = {};
        if (creds?.password !== undefined) headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
        res = await request(url, { method: 'GET', headers });
      }
    } catch (err) {
      throw new KkError('BACKEND', `token server ${url.origin} of registry ${this.host}: ${(err as Error).message}`, { cause: err });
    }
    const text = await res.body.text();
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new KkError('AUTH', `token server ${url.origin} refused the credentials for ${this.host} (HTTP ${res.statusCode})`, { hint: creds ? 'check the user name and password (docker login again)' : 'this registry wants credentials: docker login to it, or put user:password in the store URL' });
    }
    if (res.statusCode !== 200) throw new KkError('BACKEND', `token server ${url.origin} answered HTTP ${res.statusCode}: ${text.slice(0, 200)}`);
    let body: { token?: string; access_token?: string; expires_in?: number };
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw new KkError('BACKEND', `token server ${url.origin} answered something that is not JSON`, { cause: err });
    }
    const value = body.token ?? body.access_token;
    if (!value) throw new KkError('BACKEND', `token server ${url.origin} answered without a token`);
    // 60 s is the spec's default lifetime; renew a little early.
    const life = (Number(body.expires_in) > 0 ? Number(body.expires_in) : 60) * 1000;
    return { value, expires: Date.now() + Math.max(life - 10_000, life / 2) };
  }
}
