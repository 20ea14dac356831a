import { Args } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { table } from '../../format.js';
import { serverFlags, serverOf } from '../token/list.js';

export default class TargetStatus extends KkCommand<typeof TargetStatus> {
  static override summary = 'Show a target: running or paused (by whom, since when), its last sync and the last 10 syncs.';
  static override examples = ['<%= config.bin %> target status tg-0abc', '<%= config.bin %> target status tg-0abc --json'];
  static override args = { target: Args.string({ description: 'Target id.', required: true }) };
  static override flags = { ...serverFlags };

  protected async exec(): Promise<Outcome<Record<string, any>>> {
    const { url, token } = await serverOf(this.flags, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).targetStatus(this.args.target);
    return {
      result,
      essential: true,
      render: (s) => {
        const t = s.target;
        const lines = [
          `${t.id}: ${t.project}/${t.app} -> ${t.node}:${t.path} (${t.strategy}, ${t.mode ?? 'full'}), ${s.state}${t.paused ? ` by ${t.paused.by} since ${t.paused.since}: ${t.paused.reason}${t.paused.until ? ` (until ${t.paused.until})` : ''}` : ''}`,
          `holds ${t.current_version ?? 'nothing yet'}; last sync ${t.last_sync ?? 'never'} (${t.last_status ?? '-'})`,
        ];
        if (s.verify) lines.push(`verify: ${s.verify.state} (${s.verify.version}, ${s.verify.time})${s.verify.error ? ` ${s.verify.error.code}: ${s.verify.error.reason}` : ''}`);
        if (s.running) lines.push(`running: ${s.running.id} ${s.running.version} attempt ${s.running.attempts}, ${s.running.stage ?? ''}`);
        if (s.queued) lines.push(`queued: ${s.queued.id} ${s.queued.version} (${s.queued.state}${s.queued.error ? `, last error ${s.queued.error.code}: ${s.queued.error.reason}` : ''})`);
        if (s.history.length) {
          lines.push(
            table([
              ['TIME', 'FROM', 'TO', 'FILES +/~/-', 'BYTES', 'SECONDS', 'STATUS', 'ERROR'],
              ...s.history.map((h: Record<string, any>) => [h.time, h.from_version ?? '-', h.to_version, `${h.files.added ?? '-'}/${h.files.changed ?? '-'}/${h.files.deleted ?? '-'}`, String(h.bytes ?? '-'), h.duration_ms == null ? '-' : String(h.duration_ms / 1000), h.status, h.error ? `${h.error.code}: ${h.error.reason}` : '']),
            ]),
          );
        }
        return lines;
      },
    };
  }
}
