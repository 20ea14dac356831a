// Acceptance 4: --json prints exactly one JSON document on stdout with the figures; nothing else
// goes to stdout, and no progress is drawn.
import { appendFile, rm, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANSI, type Sandbox, pseudoRandom, sandbox, writeTree } from './helpers.js';

const BIG = 3 * 1024 * 1024;

describe('--json', () => {
  let sb: Sandbox;
  const app = ['--project', 'shop', '--app', 'api'];
  const json = async (args: string[], exit = 0) => {
    const r = await sb.kkJson(args);
    expect(r.code, r.stdout + r.stderr).toBe(exit);
    expect(r.stderr).toBe('');
    expect(r.stdout).not.toMatch(ANSI);
    expect(typeof r.json.seconds).toBe('number');
    return r.json;
  };

  beforeAll(async () => {
    sb = await sandbox();
    await writeFile(sb.path('.kkartifact.yml'), 'store: ./store\n');
    await writeTree(sb.path('build'), {
      'big.bin': pseudoRandom(BIG, 'big'),
      'index.html': '<p>one</p>\n',
      'gone.txt': 'deleted in v2\n',
    });
  });
  afterAll(() => sb.cleanup());

  it('push: files and bytes hashed and uploaded; a repeat uploads nothing', async () => {
    const total = BIG + 11 + 14;
    const first = await json(['push', ...app, '--version', '1.0.0', '--path', 'build', '--packs', 'none']);
    expect(first).toMatchObject({ status: 'created', version: '1.0.0', files: 3, bytes: total, filesHashed: 3, bytesHashed: total, bytesUploaded: total });
    expect(first.chunksUploaded).toBe(first.chunks);
    expect(first.manifest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const again = await json(['push', ...app, '--version', '1.0.0', '--path', 'build']);
    expect(again).toMatchObject({ status: 'unchanged', manifest: first.manifest, chunksUploaded: 0, bytesUploaded: 0 });
    // Files changed within the last 2 s are rehashed rather than trusted to the stat cache.
    expect(again.filesHashed + again.filesCached).toBe(3);
  });

  it('pull: files added, bytes fetched; then v2 seeds unchanged chunks from the deployed file', async () => {
    const v1 = await json(['pull', ...app, '--version', '1.0.0', '--path', 'deploy']);
    expect(v1.plan).toMatchObject({ filesAdded: 3, filesChanged: 0, filesDeleted: 0 });
    expect(v1).toMatchObject({ version: '1.0.0', bytesFetchedRaw: BIG + 25, bytesSeeded: 0, upToDate: false });

    await appendFile(sb.path('build/big.bin'), 'tail');
    await writeTree(sb.path('build'), { 'index.html': '<p>two</p>\n', 'new.txt': 'added in v2\n' });
    await rm(sb.path('build/gone.txt'));
    const pushed = await json(['push', ...app, '--version', '2.0.0', '--path', 'build']);
    expect(pushed.filesHashed).toBe(3);
    expect(pushed.bytesUploaded).toBeLessThan(BIG);

    const plan = await json(['diff', ...app, '--version', '2.0.0', '--path', 'deploy'], 1);
    expect(plan).toMatchObject({ mode: 'plan', changes: true, dryRun: true, plan: { filesAdded: 1, filesChanged: 2, filesDeleted: 1 } });
    expect(plan.paths).toEqual({ added: ['new.txt'], changed: expect.arrayContaining(['big.bin', 'index.html']), deleted: ['gone.txt'], metaOnly: [] });
    const versions = await json(['diff', ...app, '--from', '1.0.0', '--to', '2.0.0'], 1);
    expect(versions).toMatchObject({ mode: 'versions', filesAdded: 1, filesChanged: 2, filesDeleted: 1, added: ['new.txt'], deleted: ['gone.txt'] });

    const v2 = await json(['pull', ...app, '--version', 'latest', '--path', 'deploy']);
    expect(v2).toMatchObject({ version: '2.0.0', previous: '1.0.0', plan: { filesAdded: 1, filesChanged: 2, filesDeleted: 1 } });
    expect(v2.bytesSeeded).toBeGreaterThan(0);
    expect(v2.bytesFetchedRaw + v2.bytesSeeded).toBe(v2.plan.bytesToWrite);
    expect(v2.bytesFetchedRaw).toBeLessThan(BIG);

    const nothing = await json(['diff', ...app, '--version', '2.0.0', '--path', 'deploy'], 0);
    expect(nothing).toMatchObject({ changes: false, upToDate: true });
  });

  it('rollback, versions, verify', async () => {
    const back = await json(['rollback', '--path', 'deploy']);
    expect(back).toMatchObject({ version: '1.0.0', previous: '2.0.0', bytesFetched: 0, plan: { filesAdded: 1, filesChanged: 2, filesDeleted: 1 } });
    expect(back.bytesSeeded).toBe(back.plan.bytesToWrite);

    const list = await json(['versions', ...app]);
    expect(list).toMatchObject({ project: 'shop', app: 'api', count: 2 });
    expect(list.versions.map((v: { version: string }) => v.version)).toEqual(['2.0.0', '1.0.0']);

    const verified = await json(['verify', '--path', 'deploy']);
    expect(verified).toMatchObject({ ok: true, version: '1.0.0', filesChecked: 3, bytesHashed: BIG + 25, problems: [] });
  });

  it('gc: the reason each version goes or stays, then chunks freed', async () => {
    const dry = await json(['gc', '--keep', '1', '--dry-run']);
    expect(dry).toMatchObject({ dryRun: true, keep: 1, versionsDeleted: 1 });
    expect(dry.retention[0].decisions).toEqual([
      expect.objectContaining({ version: '2.0.0', action: 'keep', reason: 'among the newest 1' }),
      expect.objectContaining({ version: '1.0.0', action: 'delete', reason: 'older than the newest 1' }),
    ]);
    expect((await json(['versions', ...app])).count).toBe(2);

    const real = await json(['gc', '--keep', '1', '--grace', '0s']);
    expect(real).toMatchObject({ dryRun: false, versionsDeleted: 1, retention: [expect.objectContaining({ deleted: ['1.0.0'] })] });
    expect(real.chunks.chunksDeleted).toBeGreaterThan(0);
    expect(real.chunks.bytesFreed).toBeGreaterThan(0);
    expect(real.chunks.manifestsDeleted).toBe(1);
    expect((await json(['versions', ...app])).versions.map((v: { version: string }) => v.version)).toEqual(['2.0.0']);
  });

  it('errors are one JSON document too', async () => {
    const r = await sb.kkJson(['pull', ...app, '--version', 'nope', '--path', 'deploy']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('');
    expect(r.json).toEqual({ error: expect.objectContaining({ code: 'NOT_FOUND', exitCode: 1, message: expect.any(String), hint: expect.any(String) }) });
  });
});
