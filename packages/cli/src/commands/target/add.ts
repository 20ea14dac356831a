import { Flags } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { appFlag, projectFlag } from '../../flags.js';
import { serverFlags, serverOf } from '../token/list.js';

const list = (v: string | undefined) => (v ? v.split(',').map((s) => s.trim()).filter(Boolean) : undefined);

export default class TargetAdd extends KkCommand<typeof TargetAdd> {
  static override summary = 'Add a target: keep a directory on a node in step with a project/app.';
  static override description = 'The target follows the promoted version (default), the latest push (--follows latest) or a pinned version (--version). Strategy mirror deletes what the version lacks; overlay never deletes. Include/exclude patterns (gitignore syntax) come on top of the defaults .git/, runtime/ and tmp/. One directory per node belongs to one target.';
  static override examples = ['<%= config.bin %> target add -p shop -a web --node web-1 --path /srv/shop', '<%= config.bin %> target add -p shop -a web --node web-2 --path /srv/shop --strategy overlay --exclude "*.log" --json'];
  static override flags = {
    ...serverFlags,
    project: projectFlag,
    app: appFlag,
    node: Flags.string({ summary: 'Node name or id.', required: true, helpValue: 'NODE' }),
    path: Flags.string({ summary: 'Absolute directory on the node.', required: true, helpValue: 'DIR' }),
    strategy: Flags.string({ summary: 'mirror or overlay [default: mirror].', options: ['mirror', 'overlay'] }),
    mode: Flags.string({ summary: 'full (compare every file) or skip-existing (only add files the directory lacks) [default: full].', options: ['full', 'skip-existing'] }),
    follows: Flags.string({ summary: 'What the target follows [default: promoted].', options: ['promoted', 'latest'] }),
    version: Flags.string({ summary: 'Pin the target to this version.', helpValue: 'VERSION' }),
    include: Flags.string({ summary: 'Only these paths, comma-separated patterns.', helpValue: 'PATTERNS' }),
    exclude: Flags.string({ summary: 'Never these paths, comma-separated patterns.', helpValue: 'PATTERNS' }),
  };

  protected async exec(): Promise<Outcome<Record<string, any>>> {
    const f = this.flags;
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).addTarget({
      project: f.project,
      app: f.app,
      node: f.node,
      path: f.path,
      ...(f.strategy ? { strategy: f.strategy } : {}),
      ...(f.mode ? { mode: f.mode } : {}),
      ...(f.version ? { follows: 'pinned', pinned: f.version } : f.follows ? { follows: f.follows } : {}),
      ...(list(f.include) ? { include: list(f.include) } : {}),
      ...(list(f.exclude) ? { exclude: list(f.exclude) } : {}),
    });
    return { result, render: (t) => `kk: target ${t.id}: ${t.project}/${t.app} -> ${f.node}:${t.path} (${t.strategy}, ${t.mode ?? 'full'}, follows ${t.follows === 'pinned' ? t.pinned : t.follows})` };
  }
}
