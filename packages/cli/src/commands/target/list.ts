import { Flags } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { table } from '../../format.js';
import { serverFlags, serverOf } from '../token/list.js';

export default class TargetList extends KkCommand<typeof TargetList> {
  static override summary = 'List targets: node and path, what they follow, the version they hold, paused or not.';
  static override examples = ['<%= config.bin %> target list -p shop', '<%= config.bin %> target list --node web-1 --json'];
  static override flags = {
    ...serverFlags,
    project: Flags.string({ char: 'p', summary: 'Only this project (needed for a project-scoped token).', helpValue: 'NAME' }),
    app: Flags.string({ char: 'a', summary: 'Only this app.', helpValue: 'NAME' }),
    node: Flags.string({ summary: 'Only this node.', helpValue: 'NODE' }),
  };

  protected async exec(): Promise<Outcome<{ items: Record<string, any>[]; seq: number }>> {
    const f = this.flags;
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).targets({ ...(f.project ? { project: f.project } : {}), ...(f.app ? { app: f.app } : {}), ...(f.node ? { node: f.node } : {}) });
    return {
      result,
      essential: true,
      render: (r) =>
        r.items.length === 0
          ? 'no targets'
          : table([
              ['ID', 'PROJECT/APP', 'NODE', 'PATH', 'MODE', 'FOLLOWS', 'HOLDS', 'LAST', 'PAUSED'],
              ...r.items.map((t) => [t.id, `${t.project}/${t.app}`, t.node, t.path, t.mode ?? 'full', t.follows === 'pinned' ? t.pinned : t.follows, t.current_version ?? '-', t.last_status ?? '-', t.paused ? `by ${t.paused.by}: ${t.paused.reason}` : '-']),
            ]),
    };
  }
}
