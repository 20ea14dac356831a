import { Flags } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkError } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { serverFlags, serverOf } from './token/list.js';

export default class Sync extends KkCommand<typeof Sync> {
  static override summary = 'Queue a sync now: one target, or every target of a project (optionally one app or node).';
  static override description = 'Each target gets what it follows (promoted, latest or its pinned version), or --version. A queued task for another version is replaced (latest wins). The command returns at once; watch the tasks with kk target status.';
  static override examples = ['<%= config.bin %> sync -p shop', '<%= config.bin %> sync --target tg-0abc --json', '<%= config.bin %> sync -p shop -a web --version 1.4.2'];
  static override flags = {
    ...serverFlags,
    target: Flags.string({ summary: 'One target id.', helpValue: 'ID' }),
    project: Flags.string({ char: 'p', summary: 'Every target of this project.', helpValue: 'NAME' }),
    app: Flags.string({ char: 'a', summary: 'Only targets of this app.', helpValue: 'NAME' }),
    node: Flags.string({ summary: 'Only targets on this node.', helpValue: 'NODE' }),
    version: Flags.string({ summary: 'Sync this version instead of what each target follows.', helpValue: 'VERSION' }),
  };

  protected async exec(): Promise<Outcome<{ items: Record<string, any>[] }>> {
    const f = this.flags;
    if (!f.target && !f.project) throw new KkError('CONFIG_INVALID', 'name a target (--target) or a project (--project)');
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).sync({ ...(f.target ? { target: f.target } : {}), ...(f.project ? { project: f.project } : {}), ...(f.app ? { app: f.app } : {}), ...(f.node ? { node: f.node } : {}), ...(f.version ? { version: f.version } : {}) });
    return { result, render: (r) => (r.items.length ? r.items.map((t) => `kk: ${t.id} ${t.project}/${t.app} ${t.version} -> target ${t.target}: ${t.state}`) : 'kk: no targets matched') };
  }
}
