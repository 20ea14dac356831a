import { Args, Flags } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { serverFlags, serverOf } from '../token/list.js';

export default class NodeRm extends KkCommand<typeof NodeRm> {
  static override summary = 'Remove a node (refused while targets use it, unless --force removes them too).';
  static override examples = ['<%= config.bin %> node rm web-1', '<%= config.bin %> node rm web-1 --force'];
  static override args = { node: Args.string({ description: 'Node name or id.', required: true }) };
  static override flags = { ...serverFlags, force: Flags.boolean({ summary: 'Also remove the node\'s targets and their tasks.' }) };

  protected async exec(): Promise<Outcome<{ removed: string }>> {
    const { url, token } = await serverOf(this.flags, () => this.loadKkConfig({ required: false }));
    const result = (await new FleetClient(url, token).removeNode(this.args.node, this.flags.force)) as { removed: string };
    return { result, render: (r) => `kk: node ${r.removed} removed` };
  }
}
