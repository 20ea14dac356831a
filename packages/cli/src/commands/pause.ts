import { Flags } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkError, pauseLocal } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { serverFlags, serverOf } from './token/list.js';

export default class Pause extends KkCommand<typeof Pause> {
  static override summary = 'Pause a target (on the server) or a directory (on this machine): nothing is applied there until it is resumed.';
  static override description = 'With --target the server applies nothing on that target until `kk resume --target` (or --until passes); a pull seen there anyway raises the sync.paused_pull alarm. With --path the pause is recorded in the directory itself: every pull into it on this machine (any user, the agent too) fails with PAUSED naming who paused it, when and why, until `kk resume --path`. No server is needed for --path.';
  static override examples = [
    '<%= config.bin %> pause --target tg-0abc --reason "upgrading node 2"',
    '<%= config.bin %> pause --target tg-0abc --reason maintenance --until 2h --json',
    '<%= config.bin %> pause --path /srv/shop --reason "upgrade in progress"',
  ];
  static override flags = {
    ...serverFlags,
    target: Flags.string({ summary: 'Target id (a pause on the server).', helpValue: 'ID', exactlyOne: ['target', 'path'] }),
    path: Flags.string({ summary: 'A directory on this machine (a local pause every pull honours).', helpValue: 'DIR', exactlyOne: ['target', 'path'] }),
    reason: Flags.string({ summary: 'Why: shown to whoever looks, and in the error a blocked sync reports.', required: true, helpValue: 'TEXT' }),
    until: Flags.string({ summary: 'Resume by itself after this long (2h) or at this ISO time (--target only).', helpValue: 'WHEN' }),
  };

  protected async exec(): Promise<Outcome<Record<string, any>>> {
    const f = this.flags;
    if (f.path) {
      if (f.until) throw new KkError('CONFIG_INVALID', '--until applies to a target pause only', { hint: 'resume a local pause with kk resume --path DIR' });
      const result = await pauseLocal({ target: f.path, reason: f.reason });
      return { result: { ...result }, render: (p) => `kk: ${p.target} paused by ${p.by}: ${p.reason}` };
    }
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).pause(f.target!, { reason: f.reason, ...(f.until ? { until: f.until } : {}) });
    return { result, render: (t) => `kk: target ${t.id} paused by ${t.paused.by}: ${t.paused.reason}${t.paused.until ? ` (until ${t.paused.until})` : ''}` };
  }
}
