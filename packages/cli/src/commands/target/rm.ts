import { Args } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { serverFlags, serverOf } from '../token/list.js';

export default class TargetRm extends KkCommand<typeof TargetRm> {
  static override summary = 'Remove a target (and its tasks); the directory on the node is left as it is.';
  static override examples = ['<%= config.bin %> target rm tg-0abc'];
  static override args = { target: Args.string({ description: 'Target id.', required: true }) };
  static override flags = { ...serverFlags };

  protected async exec(): Promise<Outcome<{ removed: string }>> {
    const { url, token } = await serverOf(this.flags, () => this.loadKkConfig({ required: false }));
    const result = (await new FleetClient(url, token).removeTarget(this.args.target)) as { removed: string };
    return { result, render: (r) => `kk: target ${r.removed} removed` };
  }
}
