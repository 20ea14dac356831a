import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Flags } from '@oclif/core';
import { FleetClient } from '@kk/agent';
import { KkError } from '@kk/core';
import { KkCommand, type Outcome } from '../../base.js';
import { serverFlags, serverOf } from '../token/list.js';

export default class TargetApply extends KkCommand<typeof TargetApply> {
  static override summary = 'Create or update targets from a YAML file (the project `sync:` section of seed 000).';
  static override description = `The file is a list of projects, each \`id\` (the kk project), optional \`app\` (default: the id) and a \`sync:\` mapping: enabled, driver (agent | rsync | inherit), max_parallel_nodes, retry {max_attempts, base_ms, max_ms}, offline_policy, and nodes: a list of {node_id, target_path, strategy, include, exclude, follows, pinned, on_local_change, mode (full | skip-existing)}. The server checks everything first and names the line and field of each problem; nothing changes unless all of it is valid. Targets are created or updated to match; --prune also removes the targets of the listed apps that the file does not name.`;
  static override examples = ['<%= config.bin %> target apply -f targets.yaml', '<%= config.bin %> target apply -f targets.yaml --dry-run --json', '<%= config.bin %> target apply -f targets.yaml --prune'];
  static override flags = {
    ...serverFlags,
    file: Flags.string({ char: 'f', summary: 'The YAML (or JSON) target config.', required: true, helpValue: 'FILE' }),
    'dry-run': Flags.boolean({ summary: 'Check and show what would change; change nothing.' }),
    prune: Flags.boolean({ summary: 'Remove targets of the listed apps that the file does not name.' }),
  };

  protected async exec(): Promise<Outcome<Record<string, any>>> {
    const f = this.flags;
    let text: string;
    try {
      text = await readFile(f.file, 'utf8');
    } catch (err) {
      throw new KkError('CONFIG_MISSING', `cannot read ${f.file}: ${(err as Error).message}`);
    }
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).applyTargets(text, { source: basename(f.file), dryRun: f['dry-run'], prune: f.prune });
    return {
      result,
      render: (r) => {
        const pre = r.dry_run ? 'would be ' : '';
        const lines = [
          ...r.created.map((t: Record<string, string>) => `${pre}created: ${t.project}/${t.app} -> ${t.node}:${t.path}${t.id ? ` (${t.id})` : ''}`),
          ...r.updated.map((t: Record<string, any>) => `${pre}updated: ${t.id} ${t.project}/${t.app} -> ${t.node}:${t.path} (${t.changed.join(', ')})`),
          ...r.removed.map((id: string) => `${pre}removed: ${id}`),
          ...r.skipped.map((p: string) => `skipped: ${p} (sync.enabled: false)`),
        ];
        lines.push(`kk: ${r.created.length} ${pre}created, ${r.updated.length} ${pre}updated, ${r.unchanged.length} unchanged, ${r.removed.length} ${pre}removed`);
        return lines;
      },
    };
  }
}
