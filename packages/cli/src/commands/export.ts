import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Flags } from '@oclif/core';
import { type CopyResult, copyVersions } from '@kk/core';
import { describeStoreUrl } from '@kk/drivers';
import { KkCommand, type Outcome } from '../base.js';
import { storeFlags } from '../flags.js';
import { formatBytes, formatDuration, plural } from '../format.js';

interface ExportResult extends CopyResult {
  from: string;
  file: string;
}

/** `tar:///abs/file.tar` for a path given on the command line. */
export function tarStoreUrl(file: string): string {
  const abs = isAbsolute(file) ? file : resolve(process.cwd(), file);
  return `tar://${pathToFileURL(abs).pathname}`;
}

export default class Export extends KkCommand<typeof Export> {
  static override summary = 'Write versions into one tar file (an OCI image layout) for an air-gapped transfer.';
  static override description =
    'Same as `kk copy --to tar:///abs/file.tar`: the file is created, or versions are added to it. It is an OCI image layout, so `skopeo copy --all oci-archive:FILE:r_<project>_<app>_<version> docker://...` also loads it into a registry. `kk import FILE` reads it back into a store.';
  static override examples = [
    '<%= config.bin %> export --project shop --app web --version 1.4.2 --to shop-web-1.4.2.tar',
    '<%= config.bin %> export --project shop --to /media/usb/shop.tar --store s3://bucket/kk',
  ];
  static override flags = {
    project: Flags.string({ char: 'p', summary: 'Export only this project [default: every project].', helpValue: 'NAME' }),
    app: Flags.string({ char: 'a', summary: 'Export only this app of --project.', dependsOn: ['project'], helpValue: 'NAME' }),
    version: Flags.string({ summary: 'Export only this version of --app (a name, `latest` or a channel).', dependsOn: ['app'], helpValue: 'VERSION' }),
    to: Flags.string({ summary: 'The tar file to write.', required: true, helpValue: 'FILE' }),
    ...storeFlags,
    concurrency: Flags.integer({ summary: 'Parallel chunk transfers.', default: 8, min: 1, max: 1024, helpValue: 'N' }),
  };

  protected async exec(): Promise<Outcome<ExportResult>> {
    const f = this.flags;
    const config = await this.loadKkConfig({ required: false });
    const source = this.storeLocation(config);
    const from = await this.openStore(config);
    const to = await this.openStoreLocation({ url: tarStoreUrl(f.to), cwd: process.cwd() }, { create: true, chunking: from.config.chunking, compression: from.config.compression });
    const copied = await copyVersions({ from, to, hasher: this.hasher, project: f.project, app: f.app, version: f.version, concurrency: f.concurrency, onProgress: this.onProgress });
    return { result: { from: describeStoreUrl(source.url), file: resolve(f.to), ...copied }, render: renderExport };
  }
}

function renderExport(r: ExportResult): string[] {
  const fresh = r.versions - r.versionsUnchanged;
  return [
    `exported ${plural(fresh, 'version')} to ${r.file}` + (r.versionsUnchanged ? ` (${r.versionsUnchanged} already there)` : ''),
    `  wrote ${plural(r.chunksCopied, 'chunk')} in ${plural(r.packsCopied, 'pack')} (${formatBytes(r.bytesCopied)}) in ${formatDuration(r.durationMs / 1000)}`,
  ];
}
