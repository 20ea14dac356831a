import { Args } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { serverFlags, serverOf } from '../token/list.js';

export default class NodeShow extends KkCommand<typeof NodeShow> {
  static override summary = 'Show one node: status and its history, targets, what the agent reported.';
  static override examples = ['<%= config.bin %> node show web-1', '<%= config.bin %> node show web-1 --json'];
  static override args = { node: Args.string({ description: 'Node name or id.', required: true }) };
  static override flags = { ...serverFlags };

  protected async exec(): Promise<Outcome<Record<string, any>>> {
    const { url, token } = await serverOf(this.flags, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).node(this.args.node);
    return {
      result,
      essential: true,
      render: (n) => [
        `${n.name} (${n.id}), ${n.kind}: ${n.status} since ${n.status_since}: ${n.status_reason}`,
        `last heartbeat: ${n.last_heartbeat ?? 'never'}; schedulable: ${n.schedulable ? 'yes' : `no (${n.drain_reason})`}`,
        `targets: ${n.targets.length ? n.targets.map((t: Record<string, string>) => `${t.project}/${t.app} -> ${t.path} (${t.id})`).join(', ') : 'none'}`,
        'history:',
        ...n.history.map((h: Record<string, string>) => `  ${h.time}  ${h.from ?? '-'} -> ${h.to}: ${h.reason}`),
      ],
    };
  }
}
