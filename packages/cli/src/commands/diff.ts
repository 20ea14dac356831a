import { Errors, Flags } from '@oclif/core';
import { type PullResult, type VersionDiff, diffManifests, pull } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { EXIT, type ExitCode } from '../exit-codes.js';
import { appFlag, concurrencyFlag, projectFlag, stateDirFlag, storeFlags } from '../flags.js';
import { renderApply, renderVersionDiff } from '../render.js';

type PlanDiff = PullResult & { mode: 'plan'; changes: boolean };
type VersionsDiff = VersionDiff & {
  mode: 'versions';
  project: string;
  app: string;
  filesAdded: number;
  filesChanged: number;
  filesDeleted: number;
  changes: boolean;
};

export default class Diff extends KkCommand<typeof Diff> {
  static override summary = 'Show what a pull would change at a path, or what differs between two versions.';
  static override description = `With --path: the plan \`kk pull\` would carry out there (files to add, change, delete), computed without touching anything. With --from and --to: the files that differ between two versions in the store. Like diff(1), exits 0 when there is nothing to do, 1 when there are differences, and 2 or more on errors (never 1). The plan lists the paths the ignore rules protect, and which rule (from the config, or recorded in the version by its push) protects each.`;
  static override examples = [
    '<%= config.bin %> diff --project myproject --app myapp --version 2.0.0 --path /opt/apps/myproject/myapp',
    '<%= config.bin %> diff --project myproject --app myapp --from 1.0.0 --to 2.0.0',
  ];
  static override flags = {
    project: projectFlag,
    app: appFlag,
    version: Flags.string({
      summary: 'With --path: the version to compare the directory with (a name, "latest" or a channel).',
      default: 'latest',
      helpValue: 'VERSION',
    }),
    path: Flags.string({ summary: 'Deploy directory to compare with --version.', helpValue: 'DIR', exclusive: ['from', 'to'] }),
    from: Flags.string({ summary: 'Compare two versions: the old one.', helpValue: 'VERSION', dependsOn: ['to'], exclusive: ['path'] }),
    to: Flags.string({ summary: 'Compare two versions: the new one.', helpValue: 'VERSION', dependsOn: ['from'], exclusive: ['path'] }),
    ...storeFlags,
    concurrency: concurrencyFlag,
    'state-dir': stateDirFlag,
  };

  /** Exit 1 means "there are differences": an error that would exit 1 exits 2 here (issue 10 item 11). */
  protected override failureExitCode(code: ExitCode): ExitCode {
    return code === EXIT.ERROR ? EXIT.USAGE : code;
  }

  protected async exec(): Promise<Outcome<PlanDiff> | Outcome<VersionsDiff>> {
    const f = this.flags;
    if (!f.path && !f.from) throw new Errors.CLIError('give --path DIR (the plan of a pull) or --from V1 --to V2 (two versions)', { exit: EXIT.USAGE });
    const config = await this.loadKkConfig({ required: false });
    const store = await this.openStore(config);
    if (f.from && f.to) {
      const [a, b] = await Promise.all(
        [f.from, f.to].map(async (v) => store.getManifest((await store.resolveVersion(f.project, f.app, v)).manifest)),
      );
      const d = diffManifests(a!, b!);
      const changes = d.added.length + d.changed.length + d.deleted.length + d.modeChanged.length > 0;
      const result: VersionsDiff = {
        mode: 'versions',
        project: f.project,
        app: f.app,
        ...d,
        filesAdded: d.added.length,
        filesChanged: d.changed.length,
        filesDeleted: d.deleted.length,
        changes,
      };
      return { result, render: (r: VersionsDiff) => renderVersionDiff(r, !!f.verbose), essential: true, exitCode: changes ? EXIT.ERROR : EXIT.OK };
    }
    const plan = await pull({
      store,
      hasher: this.hasher,
      project: f.project,
      app: f.app,
      version: f.version,
      target: f.path!,
      stateDir: this.stateDir(),
      ignore: config?.ignore,
      dryRun: true,
      concurrency: this.concurrency(config),
      onProgress: this.onProgress,
    });
    const result: PlanDiff = { mode: 'plan', ...plan, changes: !plan.upToDate };
    return { result, render: (r: PlanDiff) => renderApply(r, 'deployed', !!f.verbose), essential: true, exitCode: result.changes ? EXIT.ERROR : EXIT.OK };
  }
}
