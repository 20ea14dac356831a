import { resolve } from 'node:path';
import { Args, Flags } from '@oclif/core';
import { type CopyResult, copyVersions } from '@kk/core';
import { describeStoreUrl } from '@kk/drivers';
import { KkCommand, type Outcome } from '../base.js';
import { storeFlags } from '../flags.js';
import { formatBytes, formatDuration, plural } from '../format.js';
import { tarStoreUrl } from './export.js';

interface ImportResult extends CopyResult {
  file: string;
  to: string;
}

export default class Import extends KkCommand<typeof Import> {
  static override summary = 'Read the versions of a tar file (from `kk export`) into a store.';
  static override description =
    'Same as `kk copy --from tar:///abs/file.tar`: versions the store already has are skipped, only missing chunks are written. The file is read in place (never extracted); entries that are not part of an OCI image layout, links and bad digests are refused. The store is --store, else the config file\'s `store:`; it is created if absent.';
  static override examples = [
    '<%= config.bin %> import shop-web-1.4.2.tar --store /srv/kk-store',
    '<%= config.bin %> import /media/usb/shop.tar --project shop --app web',
  ];
  static override args = {
    file: Args.string({ description: 'The tar file to read.', required: true }),
  };
  static override flags = {
    project: Flags.string({ char: 'p', summary: 'Import only this project.', helpValue: 'NAME' }),
    app: Flags.string({ char: 'a', summary: 'Import only this app of --project.', dependsOn: ['project'], helpValue: 'NAME' }),
    version: Flags.string({ summary: 'Import only this version of --app (a name, `latest` or a channel).', dependsOn: ['app'], helpValue: 'VERSION' }),
    ...storeFlags,
    concurrency: Flags.integer({ summary: 'Parallel chunk transfers.', default: 8, min: 1, max: 1024, helpValue: 'N' }),
  };

  protected async exec(): Promise<Outcome<ImportResult>> {
    const f = this.flags;
    const file = this.args.file;
    const config = await this.loadKkConfig({ required: false });
    const target = this.storeLocation(config);
    const from = await this.openStoreLocation({ url: tarStoreUrl(file), cwd: process.cwd() });
    const to = await this.openStore(config, { create: true, chunking: from.config.chunking, compression: from.config.compression, packs: from.config.packs ?? false });
    const copied = await copyVersions({ from, to, hasher: this.hasher, project: f.project, app: f.app, version: f.version, concurrency: f.concurrency, onProgress: this.onProgress });
    return { result: { file: resolve(file), to: describeStoreUrl(target.url), ...copied }, render: renderImport };
  }
}

function renderImport(r: ImportResult): string[] {
  const fresh = r.versions - r.versionsUnchanged;
  return [
    `imported ${plural(fresh, 'version')} from ${r.file} into ${r.to}` + (r.versionsUnchanged ? ` (${r.versionsUnchanged} already there)` : ''),
    `  wrote ${plural(r.chunksCopied, 'chunk')} (${formatBytes(r.bytesCopied)} stored) in ${formatDuration(r.durationMs / 1000)}`,
  ];
}
