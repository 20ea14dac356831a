import { Flags } from '@oclif/core';
import { type PullResult, agentId, rollback } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { concurrencyFlag, dryRunFlag, pathFlag, stateDirFlag, storeFlags } from '../flags.js';
import { renderApply } from '../render.js';

export default class Rollback extends KkCommand<typeof Rollback> {
  static override summary = 'Put back the version a deploy directory held before.';
  static override description = `Applies the previously deployed version again (or --to V, any version deployed there before), from kk's local state: the manifest copy, files kept from earlier versions and seeding, so the common case needs no store at all; the store is opened only for chunks that are not on this machine. Exits 1 when there is nothing to roll back to. The config file is optional here: without it, the ignore rules recorded by the last pull protect the same paths.`;
  static override examples = [
    '<%= config.bin %> rollback --path /opt/apps/myproject/myapp',
    '<%= config.bin %> rollback --path /opt/apps/myproject/myapp --to 1.0.0 --dry-run',
    '<%= config.bin %> rollback --project myproject --app myapp --path /opt/apps/myproject/myapp',
  ];
  static override flags = {
    project: Flags.string({ char: 'p', summary: 'Project name: refuse unless the directory holds this project\'s app.', helpValue: 'NAME' }),
    app: Flags.string({ char: 'a', summary: 'App name: refuse unless the directory holds this app.', helpValue: 'NAME' }),
    path: pathFlag('Deploy directory to roll back.'),
    to: Flags.string({ summary: 'Version to return to [default: the one deployed before the current one].', helpValue: 'VERSION' }),
    ...storeFlags,
    concurrency: concurrencyFlag,
    'state-dir': stateDirFlag,
    'dry-run': dryRunFlag,
    'max-delete': Flags.integer({ summary: 'Refuse when more than N files would be deleted.', min: 0, helpValue: 'N' }),
  };

  protected async exec(): Promise<Outcome<PullResult>> {
    const f = this.flags;
    const config = await this.loadKkConfig({ required: false });
    const result = await rollback({
      // Opened only if a chunk is not available locally.
      store: () => this.openStore(config),
      hasher: this.hasher,
      target: f.path,
      to: f.to,
      ...(f.project !== undefined ? { project: f.project } : {}),
      ...(f.app !== undefined ? { app: f.app } : {}),
      stateDir: this.stateDir(),
      ignore: config?.ignore,
      maxDelete: f['max-delete'],
      dryRun: f['dry-run'],
      concurrency: this.concurrency(config),
      onProgress: this.onProgress,
      command: 'rollback',
      agent: await agentId(this.stateDir()),
    });
    return { result, render: (r) => renderApply(r, 'rolled back', !!f.verbose) };
  }
}
