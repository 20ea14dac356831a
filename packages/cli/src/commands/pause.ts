import { Flags } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../base.js';
import { serverFlags, serverOf } from './token/list.js';

export default class Pause extends KkCommand<typeof Pause> {
  static override summary = 'Pause a target: nothing is applied there until it is resumed (or --until passes).';
  static override examples = ['<%= config.bin %> pause --target tg-0abc --reason "upgrading node 2"', '<%= config.bin %> pause --target tg-0abc --reason maintenance --until 2h --json'];
  static override flags = {
    ...serverFlags,
    target: Flags.string({ summary: 'Target id.', required: true, helpValue: 'ID' }),
    reason: Flags.string({ summary: 'Why: shown to whoever looks, and in the error a blocked sync reports.', required: true, helpValue: 'TEXT' }),
    until: Flags.string({ summary: 'Resume by itself after this long (2h) or at this ISO time.', helpValue: 'WHEN' }),
  };

  protected async exec(): Promise<Outcome<Record<string, any>>> {
    const f = this.flags;
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).pause(f.target, { reason: f.reason, ...(f.until ? { until: f.until } : {}) });
    return { result, render: (t) => `kk: target ${t.id} paused by ${t.paused.by}: ${t.paused.reason}${t.paused.until ? ` (until ${t.paused.until})` : ''}` };
  }
}
