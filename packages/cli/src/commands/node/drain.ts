import { Args, Flags } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { serverFlags, serverOf } from '../token/list.js';

export default class NodeDrain extends KkCommand<typeof NodeDrain> {
  static override summary = 'Drain a node (it claims no new task; the running one finishes), or --undo.';
  static override examples = ['<%= config.bin %> node drain web-1 --reason "kernel upgrade"', '<%= config.bin %> node drain web-1 --undo'];
  static override args = { node: Args.string({ description: 'Node name or id.', required: true }) };
  static override flags = {
    ...serverFlags,
    reason: Flags.string({ summary: 'Why (shown in kk node list).', helpValue: 'TEXT' }),
    undo: Flags.boolean({ summary: 'Make the node schedulable again.' }),
  };

  protected async exec(): Promise<Outcome<Record<string, any>>> {
    const { url, token } = await serverOf(this.flags, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).patchNode(this.args.node, this.flags.undo ? { schedulable: true } : { schedulable: false, drain_reason: this.flags.reason ?? 'drained' });
    return { result, render: (n) => `kk: node ${n.name} ${n.schedulable ? 'is schedulable again' : `drained: ${n.drain_reason}`}` };
  }
}
