import { Flags } from '@oclif/core';
import { FleetClient, parseTags } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { table } from '../../format.js';
import { serverFlags, serverOf } from '../token/list.js';

export default class NodeList extends KkCommand<typeof NodeList> {
  static override summary = 'List the fleet\'s nodes: status and why, last heartbeat, drain, tags.';
  static override examples = ['<%= config.bin %> node list --tags region=eu', '<%= config.bin %> node list --status OFFLINE --json'];
  static override flags = {
    ...serverFlags,
    tags: Flags.string({ summary: 'Only nodes with all these tags, key=value[,...].', helpValue: 'TAGS' }),
    status: Flags.string({ summary: 'Only nodes in this status.', options: ['ONLINE', 'DEGRADED', 'OFFLINE'] }),
  };

  protected async exec(): Promise<Outcome<{ items: Record<string, any>[]; seq: number }>> {
    const { url, token } = await serverOf(this.flags, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).nodes({ ...(this.flags.tags ? { tags: parseTags(this.flags.tags) } : {}), ...(this.flags.status ? { status: this.flags.status } : {}) });
    return {
      result,
      essential: true,
      render: (r) =>
        r.items.length === 0
          ? 'no nodes'
          : table([
              ['NAME', 'ID', 'KIND', 'STATUS', 'LAST HEARTBEAT', 'SCHEDULABLE', 'TAGS', 'REASON'],
              ...r.items.map((n) => [n.name, n.id, n.kind, n.status, n.last_heartbeat ?? '-', n.schedulable ? 'yes' : `no (${n.drain_reason})`, Object.entries(n.tags as Record<string, string>).map(([k, v]) => `${k}=${v}`).join(',') || '-', n.status_reason]),
            ]),
    };
  }
}
