import { Args } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { serverFlags, serverOf } from '../token/list.js';

export default class TargetVerify extends KkCommand<typeof TargetVerify> {
  static override summary = 'Queue a verify of a target: its node rehashes the directory against the version it holds.';
  static override description = 'Every file must match the version\'s manifest and nothing may have been changed locally (a mirror target may hold nothing extra). A mismatch is a CONFLICT: an alarm event (sync.conflict, also a webhook) and the target paused again until a person resumes it. A resume runs one sync and then this verify by itself. See the outcome with kk target status.';
  static override examples = ['<%= config.bin %> target verify tg-0abc', '<%= config.bin %> target verify tg-0abc --json'];
  static override args = { target: Args.string({ description: 'Target id.', required: true }) };
  static override flags = { ...serverFlags };

  protected async exec(): Promise<Outcome<Record<string, any>>> {
    const { url, token } = await serverOf(this.flags, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).verify(this.args.target);
    return { result, render: (t) => `kk: verify ${t.id} of ${t.version} queued on target ${t.target} (${t.state})` };
  }
}
