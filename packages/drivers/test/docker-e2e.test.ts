// Issue 16 acceptance 2-3 through the built `kk`, with no kk server: push to docker:// and pull
// back byte-exactly, a second version stores only new packs, skopeo sees the tags and manifests,
// `skopeo copy --all` to another repository and from a kk export (oci-archive:) into the registry,
// then kk pulls from there; kk copy file -> docker -> tar -> s3 -> file; kk import of a tar skopeo wrote.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registryUnavailable, s3rverUnavailable, startRegistry, startS3rver } from '@kk/testkit';
import type { RegistryBackend, S3rverBackend } from '@kk/testkit';
import { type Sandbox, pseudoRandom, rsyncDifferences, sandbox, writeTree } from '../../cli/test/helpers.js';

const SKOPEO = '/usr/bin/skopeo';
const unavailable = registryUnavailable() ?? s3rverUnavailable() ?? (existsSync(SKOPEO) ? undefined : `${SKOPEO} is missing (Debian: apt-get install skopeo)`);
if (unavailable && process.env.CI) throw new Error(`CI must run the docker store end-to-end test: ${unavailable}`);

const skopeo = async (...args: string[]) => (await promisify(execFile)(SKOPEO, args, { maxBuffer: 16 << 20 })).stdout;

// About 15 kk runs of a few seconds each: minutes on a loaded 2-core machine.
describe.skipIf(!!unavailable)(`kk with docker:// and tar:// stores${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let reg: RegistryBackend;
  let s3: S3rverBackend;
  let sb: Sandbox;
  const repo = (name: string) => `docker://${reg.host}/${name}?insecure=true`;
  const kkJson = async (args: string[]) => {
    const r = await sb.kkJson(args, { env: s3.env });
    expect(r.code, `kk ${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(0);
    return r.json;
  };
  const pullExact = async (store: string, version: string, tree: string, into: string) => {
    await kkJson(['pull', '--store', store, '-p', 'demo', '-a', 'web', '--version', version, '--path', sb.path(into), '--config', sb.path('.kkartifact.yml')]);
    expect(await rsyncDifferences(tree, sb.path(into))).toBe('');
  };

  beforeAll(async () => {
    [reg, s3, sb] = await Promise.all([startRegistry({ deleteEnabled: true }), startS3rver(), sandbox()]);
    await writeFile(sb.path('.kkartifact.yml'), 'chunk_size: 64KB\n');
    const files: Record<string, string | Buffer> = { 'data/big.bin': pseudoRandom(3 * 1024 * 1024, 'big'), 'etc/app.conf': 'port = 8080\n', 'etc/empty': '' };
    for (let i = 0; i < 150; i++) files[`static/f${i}.txt`] = `file ${i}\n`.repeat(i + 1);
    await writeTree(sb.path('v1'), files);
    await writeTree(sb.path('v2'), { ...files, 'etc/app.conf': 'port = 9090\n', 'static/new.txt': 'new\n' });
  });
  afterAll(async () => {
    await sb?.cleanup();
    await Promise.all([reg?.stop(), s3?.stop()]);
  });

  it('push to docker:// and pull back byte-exactly; v2 uploads only a new pack; skopeo sees the tags and version manifests', async () => {
    const store = repo('kk/store');
    const v1 = await kkJson(['push', '--store', store, '-p', 'demo', '-a', 'web', '--version', '1.0.0', '--path', sb.path('v1'), '--config', sb.path('.kkartifact.yml')]);
    expect(v1.packsUploaded).toBeGreaterThan(0);
    const v2 = await kkJson(['push', '--store', store, '-p', 'demo', '-a', 'web', '--version', '1.0.0+b_2', '--path', sb.path('v2'), '--config', sb.path('.kkartifact.yml')]);
    expect(v2.packsUploaded).toBe(1);
    expect(v2.bytesUploaded).toBeLessThan(10_000);
    await kkJson(['promote', '--store', store, '-p', 'demo', '-a', 'web', '--version', '1.0.0+b_2']);
    await pullExact(store, '1.0.0', sb.path('v1'), 'out1');
    await pullExact(store, 'promoted', sb.path('v2'), 'out1');

    const tags = JSON.parse(await skopeo('list-tags', '--tls-verify=false', `docker://${reg.host}/kk/store`)) as { Tags: string[] };
    expect(tags.Tags.sort()).toEqual(['c_demo_web_promoted', 'kk-store', 'r_demo_web_1.0.0', 'r_demo_web_1.0.0_pb__2']);
    const raw = JSON.parse(await skopeo('inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/kk/store:r_demo_web_1.0.0_pb__2`));
    expect(raw.artifactType).toBe('application/vnd.kk.version.v1');
    expect(raw.config.mediaType).toBe('application/vnd.kk.ref.v1+json');
    const types = (raw.layers as { mediaType: string }[]).map((l) => l.mediaType);
    expect(types[0]).toBe('application/vnd.kk.manifest.v1+json');
    expect(types[1]).toBe('application/vnd.kk.chunkmap.v1');
    expect(types.filter((t) => t === 'application/vnd.kk.pack.v1')).toHaveLength(2);
    const channel = JSON.parse(await skopeo('inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/kk/store:c_demo_web_promoted`));
    expect(channel.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(channel.manifests.map((m: { artifactType: string }) => m.artifactType)).toEqual(['application/vnd.kk.channel.v1', 'application/vnd.kk.version.v1']);

    // skopeo copy --all of one version to another repository: kk pulls it from there.
    await skopeo('copy', '--all', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${reg.host}/kk/store:r_demo_web_1.0.0_pb__2`, `docker://${reg.host}/kk/copied:r_demo_web_1.0.0_pb__2`);
    await pullExact(repo('kk/copied'), '1.0.0+b_2', sb.path('v2'), 'out2');
  }, 300_000);

  it('kk copy file -> docker -> tar -> s3 -> file keeps every version byte-identical; a kk export loads into the registry by skopeo; kk import reads a tar skopeo wrote', async () => {
    const file = sb.path('origin');
    await kkJson(['push', '--store', file, '-p', 'demo', '-a', 'web', '--version', '2.0.0', '--path', sb.path('v1'), '--config', sb.path('.kkartifact.yml')]);
    await kkJson(['push', '--store', file, '-p', 'demo', '-a', 'web', '--version', '2.0.1', '--path', sb.path('v2'), '--config', sb.path('.kkartifact.yml')]);
    const tar = `tar://${sb.path('chain.tar')}`;
    const chain = [file, repo('kk/chain'), tar, s3.storeUrl('chain'), sb.path('back')];
    for (let i = 1; i < chain.length; i++) {
      const r = await kkJson(['copy', '--from', chain[i - 1]!, '--to', chain[i]!]);
      expect(r.versions).toBe(2);
    }
    const listing = async (store: string) => ((await kkJson(['versions', '--store', store, '-p', 'demo', '-a', 'web'])) as { versions: { version: string; manifest: string }[] }).versions.map((v) => [v.version, v.manifest]).sort();
    expect(await listing(sb.path('back'))).toEqual(await listing(file));
    await pullExact(sb.path('back'), '2.0.1', sb.path('v2'), 'out3');

    // kk export writes a tar that skopeo loads into the registry; kk pulls from there.
    const exported = await kkJson(['export', '--store', repo('kk/chain'), '-p', 'demo', '-a', 'web', '--version', '2.0.0', '--to', sb.path('one.tar')]);
    expect(exported.versions).toBe(1);
    await skopeo('copy', '--all', '--dest-tls-verify=false', `oci-archive:${sb.path('one.tar')}:r_demo_web_2.0.0`, `docker://${reg.host}/kk/from-tar:r_demo_web_2.0.0`);
    await pullExact(repo('kk/from-tar'), '2.0.0', sb.path('v1'), 'out4');

    // skopeo writes an oci-archive (its own tar: directory entries, its own order); kk import reads it.
    await skopeo('copy', '--all', '--src-tls-verify=false', `docker://${reg.host}/kk/chain:r_demo_web_2.0.1`, `oci-archive:${sb.path('skopeo.tar')}:r_demo_web_2.0.1`);
    await mkdir(sb.path('imported'));
    const imported = await kkJson(['import', sb.path('skopeo.tar'), '--store', sb.path('imported')]);
    expect(imported.versions).toBe(1);
    await pullExact(sb.path('imported'), '2.0.1', sb.path('v2'), 'out5');
  }, 300_000);
});
