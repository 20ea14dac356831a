import { Flags } from '@oclif/core';
import { type Manifest, KkError, TargetState, type VerifyResult, targetStatus, verifyTarget } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { EXIT } from '../exit-codes.js';
import { pathFlag, stateDirFlag, storeFlags } from '../flags.js';
import { formatBytes, plural } from '../format.js';

export default class Verify extends KkCommand<typeof Verify> {
  static override summary = 'Rehash a deployed directory and list every difference from its manifest.';
  static override description = `Checks every file's content, mode and mtime, and reports missing, extra and mistyped entries. By default the manifest is the version kk deployed there (from local state); --project/--app/--version check against a version in the store instead. The config's ignore rules apply when a config file is present. Exits 3 when anything differs.`;
  static override examples = [
    '<%= config.bin %> verify --path /opt/apps/myproject/myapp',
    '<%= config.bin %> verify --path /opt/apps/myproject/myapp --project myproject --app myapp --version 1.0.0 --json',
  ];
  static override flags = {
    path: pathFlag('Deploy directory to check.'),
    project: Flags.string({ char: 'p', summary: 'With --app and --version: check against this version in the store.', helpValue: 'NAME', dependsOn: ['app', 'version'] }),
    app: Flags.string({ char: 'a', summary: 'App of --version.', helpValue: 'NAME', dependsOn: ['project', 'version'] }),
    version: Flags.string({ summary: 'Version to check against (a name, "latest" or a channel).', helpValue: 'VERSION', dependsOn: ['project', 'app'] }),
    ...storeFlags,
    'state-dir': stateDirFlag,
  };

  protected async exec(): Promise<Outcome<VerifyResult>> {
    const f = this.flags;
    const config = await this.loadKkConfig({ required: false });
    let manifest: Manifest;
    if (f.project && f.app && f.version) {
      const store = await this.openStore(config);
      manifest = await store.getManifest((await store.resolveVersion(f.project, f.app, f.version)).manifest);
    } else {
      const status = await targetStatus(f.path, this.stateDir());
      if (!status.current) {
        throw new KkError('NOT_FOUND', `kk has not deployed anything to ${status.target}`, {
          hint: 'name the version to check against: --project P --app A --version V',
        });
      }
      const local = await new TargetState(status.target, this.stateDir()).loadManifest(status.current.manifest);
      manifest = local ?? (await (await this.openStore(config)).getManifest(status.current.manifest));
    }
    const result = await verifyTarget({ target: f.path, manifest, hasher: this.hasher, ignore: config?.ignore });
    return {
      result,
      essential: true,
      exitCode: result.ok ? EXIT.OK : EXIT.INTEGRITY,
      render: (r) => {
        const head = `${r.target} ${r.ok ? 'matches' : 'does not match'} ${manifest.project}/${manifest.app} ${r.version}: ${plural(r.filesChecked, 'file')} checked, ${formatBytes(r.bytesHashed)} hashed`;
        return [
          head,
          ...r.problems.map((p) => {
            const detail = p.expected !== undefined ? ` (expected ${p.expected}, found ${p.actual ?? 'nothing'})` : '';
            return `  ${p.problem.padEnd(10)} ${p.path}${detail}`;
          }),
        ];
      },
    };
  }
}
