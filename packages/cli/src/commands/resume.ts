import { Flags } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../base.js';
import { serverFlags, serverOf } from './token/list.js';

export default class Resume extends KkCommand<typeof Resume> {
  static override summary = 'Resume a paused target and queue one sync of what it follows.';
  static override examples = ['<%= config.bin %> resume --target tg-0abc', '<%= config.bin %> resume --target tg-0abc --json'];
  static override flags = { ...serverFlags, target: Flags.string({ summary: 'Target id.', required: true, helpValue: 'ID' }) };

  protected async exec(): Promise<Outcome<Record<string, any>>> {
    const { url, token } = await serverOf(this.flags, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).resume(this.flags.target);
    return { result, render: (r) => `kk: target ${r.target.id} resumed${r.task ? `; sync ${r.task.id} of ${r.task.version} queued` : ''}` };
  }
}
