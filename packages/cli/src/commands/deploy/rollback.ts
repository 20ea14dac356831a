import { Args, Flags } from '@oclif/core';
import { DeployClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { serverFlags, serverOf } from '../token/list.js';
import { renderRecord, waitFor } from './status.js';

export default class DeployRollback extends KkCommand<typeof DeployRollback> {
  static override summary = 'Roll a finished deploy back by hand: the node puts back what was there before it, then checks health.';
  static override description = 'Creates a deploy.rollback deploy on the same node (202), which the agent runs from what the original deploy saved (the previous version, tree or container). The version it takes away is marked bad for that target. --wait follows it; exit 0 only when it ends rolled_back.';
  static override examples = ['<%= config.bin %> deploy rollback dep-0abc --wait'];
  static override args = { id: Args.string({ description: 'The deploy to roll back.', required: true }) };
  static override flags = {
    ...serverFlags,
    wait: Flags.boolean({ summary: 'Print each stage and wait until the rollback has ended.' }),
    'callback-url': Flags.string({ summary: 'Send the signed DeployCallbackPayload here when it ends [default: the original\'s].', helpValue: 'URL' }),
  };

  protected async exec(): Promise<Outcome<Record<string, any>>> {
    const f = this.flags;
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const client = new DeployClient(url, token);
    const created = await client.rollback(this.args.id, f['callback-url'] ? { callback_url: f['callback-url'] } : {});
    if (!f.wait) return { result: created, render: (d) => [renderRecord(d), `kk: follow it with kk deploy status ${d.id} --follow`] };
    const { record, exitCode } = await waitFor(client, created, !!f.quiet);
    return { result: record, exitCode, render: (d) => renderRecord(d) };
  }
}
