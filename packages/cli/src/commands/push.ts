import { Errors, Flags } from '@oclif/core';
import { ALL_PACKS_POLICY, DEFAULT_PACK_POLICY, type PushResult, push } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { appFlag, concurrencyFlag, pathFlag, projectFlag, stateDirFlag, storeFlags, versionFlag } from '../flags.js';
import { formatBytes, formatDuration, plural, shortDigest } from '../format.js';

export default class Push extends KkCommand<typeof Push> {
  static override summary = 'Publish a build directory as an immutable version.';
  static override description = `Scans --path with the config's ignore rules, hashes and chunks it, uploads only the chunks the store lacks, then records the version. Pushing the same content under the same version again is a no-op; different content under an existing version is refused (exit 4). Requires the config file. With \`retain_versions\` in the config, only the newest N versions of this app are kept afterwards.`;
  static override examples = [
    '<%= config.bin %> push --project myproject --app myapp --version 1.0.0 --path /local/build/path --config .kkartifact.yml',
    '<%= config.bin %> push -p myproject -a myapp --version "$(git rev-parse --short HEAD)" --path dist --git-commit "$(git rev-parse HEAD)"',
  ];
  static override flags = {
    project: projectFlag,
    app: appFlag,
    version: versionFlag('Version name to create (letters, digits, . _ + -; not "latest").'),
    path: pathFlag('Build directory to publish.'),
    ...storeFlags,
    concurrency: concurrencyFlag,
    'state-dir': stateDirFlag,
    'git-commit': Flags.string({ summary: 'Git commit recorded in the manifest.', helpValue: 'SHA' }),
    builder: Flags.string({ summary: 'Builder recorded in the manifest [default: user@host].', helpValue: 'NAME' }),
    meta: Flags.string({ summary: 'Extra manifest metadata, KEY=VALUE; repeatable.', multiple: true, helpValue: 'KEY=VALUE' }),
    packs: Flags.string({
      summary: 'Pack policy of a store this push creates: small (chunks under 1 MiB go into ~16 MiB packs), all, or none (one object per chunk, the format before packs). An existing store keeps its own.',
      default: 'small',
      options: ['small', 'all', 'none'],
      helpValue: 'POLICY',
    }),
    'allow-empty': Flags.boolean({ summary: 'Publish a build with no files (refused by default: pulling it would empty every deploy directory).' }),
  };

  protected async exec(): Promise<Outcome<PushResult>> {
    const f = this.flags;
    const config = (await this.loadKkConfig({ required: true }))!;
    // The pack policy of a store this push creates (DESIGN 11); an existing store keeps its own.
    const packs = f.packs === 'small' ? DEFAULT_PACK_POLICY : f.packs === 'all' ? ALL_PACKS_POLICY : false;
    const store = await this.openStore(config, { create: true, avgChunkSize: config.chunkSize, packs });
    const result = await push({
      store,
      hasher: this.hasher,
      project: f.project,
      app: f.app,
      version: f.version,
      dir: f.path,
      ignore: config.ignore,
      symlinks: config.symlinks,
      concurrency: this.concurrency(config),
      stateDir: this.stateDir(),
      retainVersions: config.retainVersions,
      allowEmpty: f['allow-empty'],
      builder: f.builder,
      gitCommit: f['git-commit'],
      meta: parseMeta(f.meta),
      onProgress: this.onProgress,
    });
    return { result, render: (r) => renderPush(r, !!f.verbose) };
  }
}

function parseMeta(pairs: string[] | undefined): Record<string, string> | undefined {
  if (!pairs?.length) return undefined;
  const meta: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq < 1) throw new Errors.CLIError(`--meta ${JSON.stringify(p)} is not KEY=VALUE`, { exit: 2 });
    meta[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return meta;
}

function renderPush(r: PushResult, verbose: boolean): string[] {
  const name = `${r.project}/${r.app} ${r.version}`;
  const lines =
    r.status === 'unchanged'
      ? [`${name} already holds this content (${shortDigest(r.manifest)}); nothing new recorded`]
      : [`pushed ${name} (${shortDigest(r.manifest)}): ${plural(r.files, 'file')}, ${formatBytes(r.bytes)}`];
  lines.push(
    `  hashed ${plural(r.filesHashed, 'file')} (${formatBytes(r.bytesHashed)}), ${r.filesCached} unchanged since the last push; ` +
      `uploaded ${r.chunksUploaded} of ${plural(r.chunks, 'chunk')} (${formatBytes(r.bytesUploaded)}, ${formatBytes(r.bytesUploadedStored)} stored${r.packsUploaded ? ` in ${plural(r.packsUploaded, 'pack')}` : ''})${r.deltas ? `, ${plural(r.deltas, 'delta')} for pullers of the previous version (${formatBytes(r.bytesDeltas)})` : ''} in ${formatDuration(r.durationMs / 1000)}`,
  );
  if (r.retention) {
    const deleted = r.retention.deleted;
    if (deleted.length) lines.push(`  retention: kept the newest ${r.retention.keep}, deleted ${deleted.join(', ')}`);
    else if (verbose) lines.push(`  retention: kept all ${r.retention.decisions.length} versions (limit ${r.retention.keep})`);
  }
  return lines;
}
