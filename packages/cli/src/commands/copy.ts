import { Flags } from '@oclif/core';
import { type CopyResult, copyVersions } from '@kk/core';
import { describeStoreUrl } from '@kk/drivers';
import { KkCommand, type Outcome, openStoreAt } from '../base.js';
import { formatBytes, formatDuration, plural } from '../format.js';

interface CopyCommandResult extends CopyResult {
  from: string;
  to: string;
}

export default class Copy extends KkCommand<typeof Copy> {
  static override summary = 'Copy versions from one store to another, sending only the chunks the destination lacks.';
  static override description =
    'Works between any two stores (a path, file://, s3://, http(s)://...). Chunks travel as stored and are verified on the way, manifests next, each version\'s ref last, so an interrupted copy never leaves a version that cannot be pulled. Versions the destination already has are skipped; copying again sends nothing. A new destination store gets the source\'s chunking, so later pushes to it deduplicate against the copied versions.';
  static override examples = [
    '<%= config.bin %> copy --from ./kk-store --to "s3://my-bucket/kk?region=eu-west-1"',
    '<%= config.bin %> copy --from "s3://my-bucket/kk?endpoint=http://127.0.0.1:9000" --to /srv/kk-store --project myproject --app myapp --version 1.0.0',
  ];
  static override flags = {
    from: Flags.string({ summary: 'Source store URL or path.', required: true, helpValue: 'STORE' }),
    to: Flags.string({ summary: 'Destination store URL or path; created if absent.', required: true, helpValue: 'STORE' }),
    project: Flags.string({ char: 'p', summary: 'Copy only this project.', helpValue: 'NAME' }),
    app: Flags.string({ char: 'a', summary: 'Copy only this app of --project.', dependsOn: ['project'], helpValue: 'NAME' }),
    version: Flags.string({ summary: 'Copy only this version of --app (a name, `latest` or a channel).', dependsOn: ['app'], helpValue: 'VERSION' }),
    concurrency: Flags.integer({ summary: 'Parallel chunk transfers.', default: 8, min: 1, max: 1024, helpValue: 'N' }),
  };

  protected async exec(): Promise<Outcome<CopyCommandResult>> {
    const f = this.flags;
    const token = process.env.KK_TOKEN;
    const cwd = process.cwd();
    const from = await openStoreAt({ url: f.from, cwd }, {}, token);
    const to = await openStoreAt({ url: f.to, cwd }, { create: true, chunking: from.config.chunking, compression: from.config.compression, packs: from.config.packs ?? false }, token);
    try {
      const copied = await copyVersions({
        from,
        to,
        hasher: this.hasher,
        project: f.project,
        app: f.app,
        version: f.version,
        concurrency: f.concurrency,
        onProgress: this.onProgress,
      });
      return { result: { from: describeStoreUrl(f.from), to: describeStoreUrl(f.to), ...copied }, render: renderCopy };
    } finally {
      await Promise.all([from.driver.close(), to.driver.close()]);
    }
  }
}

function renderCopy(r: CopyCommandResult): string[] {
  const fresh = r.versions - r.versionsUnchanged;
  return [
    `copied ${plural(fresh, 'version')} from ${r.from} to ${r.to}` + (r.versionsUnchanged ? ` (${r.versionsUnchanged} already there)` : ''),
    `  sent ${plural(r.chunksCopied, 'chunk')} (${formatBytes(r.bytesCopied)} stored) in ${formatDuration(r.durationMs / 1000)}`,
  ];
}
