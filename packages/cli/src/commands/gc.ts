import { Flags } from '@oclif/core';
import { type GcResult, type RetentionResult, applyRetention, applyRetentionAll, gc } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { dryRunFlag, storeFlags } from '../flags.js';
import { formatBytes, formatDuration, parseDuration, table } from '../format.js';

interface GcCommandResult {
  dryRun: boolean;
  /** Versions kept per app (null: no retention count was set, every version stays). */
  keep: number | null;
  retention: RetentionResult[];
  versionsDeleted: number;
  chunks: GcResult;
}

export default class Gc extends KkCommand<typeof Gc> {
  static override summary = 'Apply retention and delete chunks and manifests no version uses.';
  static override description = `First retention: per app, keep the newest N versions (--keep, else the config's \`retain_versions\`) and every version a channel points to; each version is listed with the reason it goes or stays. Then a mark-and-sweep of the whole store deletes chunks, packs, chunk maps and manifests that no remaining version references, sparing anything younger than --grace or held by a push in flight. --dry-run changes nothing (its chunk figures do not yet count the versions retention would delete).`;
  static override examples = [
    '<%= config.bin %> gc --dry-run',
    '<%= config.bin %> gc --keep 5 --project myproject --app myapp',
    '<%= config.bin %> gc --store /var/lib/kk/store --grace 0s --json',
  ];
  static override flags = {
    keep: Flags.integer({ summary: 'Versions to keep per app [default: the config\'s retain_versions; without either, none is deleted].', min: 1, helpValue: 'N' }),
    project: Flags.string({ char: 'p', summary: 'Apply retention to this project only (chunk GC always covers the whole store).', helpValue: 'NAME' }),
    app: Flags.string({ char: 'a', summary: 'With --project: apply retention to this app only.', helpValue: 'NAME', dependsOn: ['project'] }),
    repack: Flags.boolean({ summary: 'Also rewrite packs whose live bytes fell below half their size (their old packs go in the next gc).' }),
    grace: Flags.string({ summary: 'Never delete objects younger than this (e.g. 0s, 30m, 1h, 2d).', default: '1h', helpValue: 'DURATION' }),
    'dry-run': dryRunFlag,
    ...storeFlags,
  };

  protected async exec(): Promise<Outcome<GcCommandResult>> {
    const f = this.flags;
    const graceMs = parseDuration(f.grace, '--grace');
    const config = await this.loadKkConfig({ required: false });
    const store = await this.openStore(config);
    const keep = f.keep ?? config?.retainVersions ?? null;
    const dryRun = !!f['dry-run'];
    let retention: RetentionResult[] = [];
    if (keep !== null) {
      this.onProgress({ phase: 'retention', done: 0, total: 0, bytesDone: 0, bytesTotal: 0 });
      if (f.project && f.app) retention = [await applyRetention({ store, project: f.project, app: f.app, keep, dryRun })];
      else if (f.project) {
        for (const app of await store.listApps(f.project)) retention.push(await applyRetention({ store, project: f.project, app, keep, dryRun }));
      } else retention = await applyRetentionAll({ store, keep, dryRun });
    }
    const chunks = await gc({ store, dryRun, graceMs, repack: !!f.repack, onProgress: this.onProgress });
    const versionsDeleted = retention.reduce((n, r) => n + r.deleted.length, 0);
    return { result: { dryRun, keep, retention, versionsDeleted, chunks }, render: (r) => renderGc(r, graceMs) };
  }
}

function renderGc(r: GcCommandResult, graceMs: number): string[] {
  const would = r.dryRun ? 'would delete' : 'deleted';
  const lines: string[] = [];
  if (r.keep === null) lines.push('retention: no count set (retain_versions in the config, or --keep N): every version stays');
  else {
    lines.push(`retention: keep the newest ${r.keep} versions per app and every version a channel points to; ${would} ${r.versionsDeleted}`);
    const rows = r.retention.flatMap((a) => a.decisions.map((d) => [`  ${a.project}/${a.app}`, d.version, d.action === 'keep' ? 'stays' : r.dryRun ? 'would go' : 'deleted', d.reason]));
    if (rows.length) lines.push(table(rows));
  }
  const c = r.chunks;
  lines.push(
    `chunks: ${would} ${c.chunksDeleted} (${formatBytes(c.bytesFreed)}), kept ${c.chunksKept} in use and ${c.chunksProtected} unreferenced but protected (younger than ${formatDuration(graceMs / 1000)} or leased by a push); ` +
      `manifests: ${would} ${c.manifestsDeleted}, kept ${c.manifestsKept}`,
  );
  if (c.packsKept || c.packsDeleted || c.packsProtected) {
    lines.push(`packs: ${would} ${c.packsDeleted} and ${c.chunkMapsDeleted} chunk map(s), kept ${c.packsKept} in use and ${c.packsProtected} protected`);
  }
  if (c.packsRepacked) lines.push(`repack: rewrote ${c.packsRepacked} sparse pack(s) into ${c.packsWritten}, ${c.versionsRemapped} version(s) given a new chunk map`);
  if (c.tempFilesDeleted || c.leasesExpired) {
    lines.push(`left by interrupted writers: ${would} ${c.tempFilesDeleted} temp file(s) older than ${formatDuration(graceMs / 1000)} and ${c.leasesExpired} expired push lease(s)`);
  }
  return lines;
}
