import { Flags } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { resumeLocal } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { serverFlags, serverOf } from './token/list.js';

export default class Resume extends KkCommand<typeof Resume> {
  static override summary = 'Resume a paused target (then one sync and a verify run) or a locally paused directory.';
  static override examples = ['<%= config.bin %> resume --target tg-0abc', '<%= config.bin %> resume --target tg-0abc --json', '<%= config.bin %> resume --path /srv/shop'];
  static override flags = {
    ...serverFlags,
    target: Flags.string({ summary: 'Target id.', helpValue: 'ID', exactlyOne: ['target', 'path'] }),
    path: Flags.string({ summary: 'A directory paused with kk pause --path.', helpValue: 'DIR', exactlyOne: ['target', 'path'] }),
  };

  protected async exec(): Promise<Outcome<Record<string, any>>> {
    const f = this.flags;
    if (f.path) {
      const was = await resumeLocal({ target: f.path });
      return { result: { path: f.path, resumed: !!was, ...(was ? { was } : {}) }, render: (r) => (r.resumed ? `kk: ${r.path} resumed (was paused by ${r.was.by} since ${r.was.since}: ${r.was.reason})` : `kk: ${r.path} was not paused`) };
    }
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).resume(f.target!);
    return { result, render: (r) => `kk: target ${r.target.id} resumed${r.task ? `; sync ${r.task.id} of ${r.task.version} queued (a verify follows it)` : ''}` };
  }
}
