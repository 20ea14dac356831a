import { Flags } from '@oclif/core';
import { DeployClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { table } from '../../format.js';
import { serverFlags, serverOf } from '../token/list.js';

export default class DeployList extends KkCommand<typeof DeployList> {
  static override summary = 'List a node\'s deploys, newest first (cursor paged).';
  static override examples = ['<%= config.bin %> deploy list --node web-1', '<%= config.bin %> deploy list --node web-1 --limit 10 --json'];
  static override flags = {
    ...serverFlags,
    node: Flags.string({ summary: 'The node (name or id).', required: true, helpValue: 'NODE' }),
    limit: Flags.integer({ summary: 'At most this many [default: 50].', min: 1, max: 200, helpValue: 'N' }),
    cursor: Flags.string({ summary: 'Continue after this deploy id (next_cursor of the previous page).', helpValue: 'ID' }),
  };

  protected async exec(): Promise<Outcome<{ node: string; items: Record<string, any>[]; next_cursor: string | null }>> {
    const f = this.flags;
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const result = await new DeployClient(url, token).list(f.node, { ...(f.cursor ? { cursor: f.cursor } : {}), ...(f.limit ? { limit: f.limit } : {}) });
    return {
      result,
      essential: true,
      render: (r) => [
        r.items.length ? table([['ID', 'COMMAND', 'STATUS', 'PROGRESS', 'VERSION', 'TARGET', 'CREATED'], ...r.items.map((d) => [d.id, d.command_type, d.status, `${d.progress}%`, d.version ?? '-', d.target, d.created])]) : `no deploys on ${f.node}`,
        ...(r.next_cursor ? [`more: kk deploy list --node ${f.node} --cursor ${r.next_cursor}`] : []),
      ],
    };
  }
}
