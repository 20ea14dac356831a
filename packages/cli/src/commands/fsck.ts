import { Flags } from '@oclif/core';
import { type FsckResult, fsck } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { EXIT } from '../exit-codes.js';
import { storeFlags } from '../flags.js';
import { formatBytes, table } from '../format.js';

export default class Fsck extends KkCommand<typeof Fsck> {
  static override summary = 'Verify every chunk, pack, chunk map and manifest of a store against its digest; --repair quarantines damaged ones.';
  static override description =
    'Reads every stored object and checks it against the digest it is stored under. Damaged objects are listed with the versions that need them. With --repair they are moved to quarantine/ in the store (kept for inspection, never read by kk), so the store reports them missing: pushing an affected version again from its build uploads them anew, and pulls work again. Exits 3 when damage remains (found without --repair, or still held by a running push).';
  static override examples = ['<%= config.bin %> fsck --store /var/lib/kk/store', '<%= config.bin %> fsck --store s3://bucket/kk --repair --json'];
  static override flags = {
    ...storeFlags,
    repair: Flags.boolean({ summary: 'Move damaged objects to quarantine/ so that a re-push restores them.' }),
    concurrency: Flags.integer({ summary: 'Objects verified at once [default: 8].', min: 1, max: 256, helpValue: 'N' }),
  };

  protected async exec(): Promise<Outcome<FsckResult>> {
    const f = this.flags;
    const store = await this.openStore(await this.loadKkConfig({ required: false }));
    const result = await fsck({ store, hasher: this.hasher, repair: f.repair, ...(f.concurrency ? { concurrency: f.concurrency } : {}) });
    const remaining = result.damaged.filter((d) => !d.quarantined).length;
    return {
      result,
      essential: true,
      exitCode: remaining ? EXIT.INTEGRITY : EXIT.OK,
      render: (r) => {
        const packs = r.packsChecked ? `, ${r.packsChecked} packs and ${r.chunkMapsChecked} chunk maps` : '';
        const lines = [`kk: checked ${r.chunksChecked} chunks${packs} and ${r.manifestsChecked} manifests (${formatBytes(r.bytesChecked)})`];
        if (!r.damaged.length) return [...lines, 'kk: no damage found'];
        lines.push(table([['KIND', 'OBJECT', 'PROBLEM', 'NOW'], ...r.damaged.map((d) => [d.kind, d.key, d.reason, d.quarantined ?? (r.repair ? 'kept: a push holds it, run again' : 'in place')])]));
        if (r.affected.length) lines.push(`kk: versions that need them: ${r.affected.map((v) => `${v.project}/${v.app}@${v.version}`).join(', ')}`);
        lines.push(
          r.repair
            ? `kk: quarantined ${r.quarantined}; push the versions above again from their builds to restore the data`
            : 'kk: run again with --repair to quarantine them, then push the versions above again from their builds',
        );
        return lines;
      },
    };
  }
}
