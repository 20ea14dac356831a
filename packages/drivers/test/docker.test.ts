import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store, createHasher, isKkError, push } from '@kk/core';
import { registryUnavailable, runDriverConformance, startRegistry, startTokenServer } from '@kk/testkit';
import type { RegistryBackend, TokenServer } from '@kk/testkit';
import { createDockerDriver, dockerDriverOptionsFromUrl } from '../src/docker.js';
import { keyOfTag, placeOf } from '../src/oci-store.js';
import { openDriver } from '../src/index.js';

const unavailable = registryUnavailable();
if (unavailable && process.env.CI) throw new Error(`CI must run the docker driver tests: ${unavailable}`);

describe.skipIf(!!unavailable)(`docker driver against the distribution registry${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  runDriverConformance('docker (registry, DELETE refused: tombstones)', async () => {
    const reg = await startRegistry();
    return { driver: createDockerDriver({ host: reg.host, repository: 'kk/conformance', insecure: true }), cleanup: () => reg.stop() };
  });

  runDriverConformance('docker (registry with token auth and DELETE enabled)', async () => {
    const tokens = await startTokenServer({ users: { kk: 'secret' } });
    const reg = await startRegistry({ deleteEnabled: true, tokenAuth: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.certFile } });
    const driver = createDockerDriver({ host: reg.host, repository: 'kk/conformance', insecure: true, credentials: { username: 'kk', password: 'secret' } });
    return {
      driver,
      cleanup: async () => {
        await reg.stop();
        await tokens.stop();
      },
    };
  });
});

describe.skipIf(!!unavailable)('docker driver with Basic auth (htpasswd)', () => {
  it('answers a Basic challenge with the URL credentials; a wrong password is AUTH', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'kk-docker-basic-'));
    // bcrypt (cost 4) of "secret": the registry checks it on every request.
    await writeFile(path.join(dir, 'htpasswd'), 'kk:$2b$04$5.2QNpPB1DBDQJlxpQmOu.b.QktXcHeuQmCFlmR9qQ0..SsjoTcwy\n');
    const reg = await startRegistry({ htpasswd: path.join(dir, 'htpasswd') });
    try {
      const good = await openDriver(`docker://kk:secret@${reg.host}/kk/basic?insecure=true`);
      await good.put!('objects/x', Buffer.from('basic'));
      expect((await good.get('objects/x'))!.toString()).toBe('basic');
      await good.close();
      const bad = await openDriver(`docker://kk:wrong@${reg.host}/kk/basic?insecure=true`);
      const err = await bad.get('objects/x').catch((e: unknown) => e);
      expect(isKkError(err, 'AUTH'), String(err)).toBe(true);
      await bad.close();
    } finally {
      await reg.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('docker key mapping', () => {
  it('maps refs and channels to tags injectively and back; other keys to k_ tags', () => {
    const versions = ['1.0.0', '1.0.0+b_2', '1.0.0_pb', 'a__b', 'a_b', 'x+y', 'x_py', 'R-1.2'];
    const tags = versions.map((v) => placeOf(`refs/shop/web/${v}`)).map((p) => (p as { tag: string }).tag);
    expect(new Set(tags).size).toBe(versions.length);
    expect(tags[1]).toBe('r_shop_web_1.0.0_pb__2');
    for (const [i, v] of versions.entries()) expect(keyOfTag(tags[i]!)).toBe(`refs/shop/web/${v}`);
    expect(placeOf('channels/shop/web/promoted')).toEqual({ kind: 'channel', tag: 'c_shop_web_promoted' });
    expect(placeOf('kk-store.json')).toEqual({ kind: 'object', tag: 'kk-store' });
    expect(placeOf('locks/push/shop/web/x_1')).toEqual({ kind: 'object', tag: 'k_locks_spush_sshop_sweb_sx__1' });
    expect(keyOfTag('k_locks_spush_sshop_sweb_sx__1')).toBe('locks/push/shop/web/x_1');
    expect(placeOf(`packs/ab/ab${'0'.repeat(62)}`)).toMatchObject({ kind: 'blob', digest: `sha256:ab${'0'.repeat(62)}` });
    for (const foreign of ['latest', 'sha256-abc.sig', 'v1.2', 'r_Shop_web_1', 'k_bad_xescape']) expect(keyOfTag(foreign)).toBeUndefined();
  });

  it('a ref whose tag would pass 128 characters is INVALID_NAME before any I/O; loose chunks are refused', async () => {
    // Port 9 (discard) on 127.0.0.1: any request would fail with BACKEND, not INVALID_NAME.
    const d = createDockerDriver({ host: '127.0.0.1:9', repository: 'kk/x', insecure: true, retries: 0 });
    try {
      const key = `refs/${'p'.repeat(40)}/${'a'.repeat(40)}/${'v'.repeat(45)}`;
      const err = await d.put(key, Buffer.from('{}')).catch((e: unknown) => e);
      expect(isKkError(err, 'INVALID_NAME'), String(err)).toBe(true);
      const chunk = await d.put(`chunks/ab/ab${'0'.repeat(62)}`, Buffer.from([0])).catch((e: unknown) => e);
      expect(isKkError(chunk, 'STORE_INVALID'), String(chunk)).toBe(true);
      expect((chunk as Error).message).toMatch(/packs only/);
    } finally {
      await d.close();
    }
  });

  it('parses docker:// URLs', () => {
    expect(dockerDriverOptionsFromUrl(new URL('docker://u:p%40ss@127.0.0.1:5000/team/kk-store?insecure=true'))).toEqual({
      host: '127.0.0.1:5000',
      repository: 'team/kk-store',
      insecure: true,
      credentials: { username: 'u', password: 'p@ss' },
    });
    expect(() => dockerDriverOptionsFromUrl(new URL('docker://127.0.0.1:5000/'))).toThrow(/no repository/);
    expect(() => dockerDriverOptionsFromUrl(new URL('docker://h/r?bogus=1'))).toThrow(/unknown parameter/);
  });
});

describe.skipIf(!!unavailable)('docker driver: credentials and what a push costs', () => {
  let tokens: TokenServer;
  let reg: RegistryBackend;
  let dir: string;
  const saved = { DOCKER_CONFIG: process.env.DOCKER_CONFIG, PATH: process.env.PATH };
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kk-docker-auth-'));
    tokens = await startTokenServer({ users: { kk: 'secret' }, refreshTokens: { 'kk-identity-token': 'kk' }, anonymousPull: true });
    reg = await startRegistry({ tokenAuth: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.certFile } });
  });
  afterAll(async () => {
    process.env.DOCKER_CONFIG = saved.DOCKER_CONFIG;
    process.env.PATH = saved.PATH;
    if (saved.DOCKER_CONFIG === undefined) delete process.env.DOCKER_CONFIG;
    await reg?.stop();
    await tokens?.stop();
    await rm(dir, { recursive: true, force: true });
  });
  /** A Docker config directory holding `config`, made current through DOCKER_CONFIG. */
  let n = 0;
  const dockerConfig = async (config: unknown) => {
    const d = path.join(dir, `docker${n++}`);
    await mkdir(d);
    await writeFile(path.join(d, 'config.json'), JSON.stringify(config));
    process.env.DOCKER_CONFIG = d;
  };
  const roundTrip = async (key: string) => {
    const d = createDockerDriver({ host: reg.host, repository: 'kk/auth', insecure: true });
    try {
      await d.put(key, Buffer.from(key));
      expect((await d.get(key))!.toString()).toBe(key);
    } finally {
      await d.close();
    }
  };

  it('anonymous: pulls are granted, a push is refused with AUTH and a hint', async () => {
    await dockerConfig({});
    const d = createDockerDriver({ host: reg.host, repository: 'kk/auth', insecure: true });
    try {
      expect(await d.get('objects/none')).toBeUndefined();
      const err = await d.put('objects/anon', Buffer.from('x')).catch((e: unknown) => e);
      expect(isKkError(err, 'AUTH'), String(err)).toBe(true);
      expect((err as { hint?: string }).hint).toMatch(/docker login|user:password/);
    } finally {
      await d.close();
    }
  });

  it('config.json auths, a credential helper, an identity token (OAuth2 refresh), and a wrong password', async () => {
    await dockerConfig({ auths: { [reg.host]: { auth: Buffer.from('kk:secret').toString('base64') } } });
    await roundTrip('objects/from-auths');

    const bin = path.join(dir, 'bin');
    await mkdir(bin, { recursive: true });
    await writeFile(path.join(bin, 'docker-credential-kktest'), `#!/bin/sh\nread host\n[ "$host" = "${reg.host}" ] || { echo "credentials not found in native keychain"; exit 1; }\necho '{"Username":"kk","Secret":"secret"}'\n`);
    await chmod(path.join(bin, 'docker-credential-kktest'), 0o755);
    process.env.PATH = `${bin}:${saved.PATH}`;
    await dockerConfig({ credHelpers: { [reg.host]: 'kktest' } });
    await roundTrip('objects/from-helper');

    await dockerConfig({ auths: { [reg.host]: { identitytoken: 'kk-identity-token' } } });
    const before = tokens.requests.length;
    await roundTrip('objects/from-identity-token');
    expect(tokens.requests.slice(before).some((r) => r.user === 'kk' && r.status === 200)).toBe(true);

    await dockerConfig({ auths: { [reg.host]: { auth: Buffer.from('kk:wrong').toString('base64') } } });
    const d = createDockerDriver({ host: reg.host, repository: 'kk/auth', insecure: true });
    try {
      const err = await d.put('objects/wrong', Buffer.from('x')).catch((e: unknown) => e);
      expect(isKkError(err, 'AUTH'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/refused the credentials/);
    } finally {
      await d.close();
    }
  });

  it('uploads big blobs in PATCH chunks and reads them back whole and by range', async () => {
    const d = createDockerDriver({ host: reg.host, repository: 'kk/chunked', insecure: true, credentials: { username: 'kk', password: 'secret' }, chunkSize: 1024 * 1024 });
    try {
      const data = Buffer.alloc(3.5 * 1024 * 1024);
      for (let i = 0; i < data.length; i += 4) data.writeUInt32BE(i, i);
      await d.put('objects/small', Buffer.from('warms up the token and the empty config blob'));
      const before = d.client.requests;
      await d.put('objects/big', data);
      // HEAD, POST, 4 PATCHes, PUT, then the manifest.
      expect(d.client.requests - before).toBe(8);
      expect((await d.get('objects/big'))!.equals(data)).toBe(true);
      expect((await d.get('objects/big', { start: 1024 * 1024 - 2, end: 1024 * 1024 + 5 }))!.equals(data.subarray(1024 * 1024 - 2, 1024 * 1024 + 6))).toBe(true);
    } finally {
      await d.close();
    }
  });

  it('openDriver takes user:password from the URL; a pushed version costs a few requests per pack, a second push only its new pack', async () => {
    await dockerConfig({});
    const url = `docker://kk:secret@${reg.host}/kk/cost?insecure=true`;
    const driver = (await openDriver(url)) as ReturnType<typeof createDockerDriver>;
    const hasher = createHasher({ threads: 1 });
    const build = path.join(dir, 'build');
    await mkdir(path.join(build, 'many'), { recursive: true });
    for (let i = 0; i < 300; i++) await writeFile(path.join(build, 'many', `f${i}`), `file ${i}\n`.repeat(50));
    try {
      const store = await Store.open(driver, { create: true });
      expect(store.config.packs?.mode).toBe('all');
      let before = driver.client.requests;
      const first = await push({ store, hasher, project: 'demo', app: 'web', version: '1', dir: build, statCache: false });
      const firstRequests = driver.client.requests - before;
      await writeFile(path.join(build, 'many', 'f0'), 'changed\n');
      before = driver.client.requests;
      const second = await push({ store, hasher, project: 'demo', app: 'web', version: '2', dir: build, statCache: false });
      const secondRequests = driver.client.requests - before;
      expect(first.packsUploaded).toBe(1);
      expect(second.packsUploaded).toBe(1);
      expect(second.bytesUploaded).toBeLessThan(100);
      // 300 files, one pack: far fewer requests than files, on both pushes.
      expect(firstRequests).toBeLessThan(60);
      expect(secondRequests).toBeLessThan(60);
    } finally {
      await hasher.close();
      await driver.close();
    }
  });
});
