import { Errors, Flags } from '@oclif/core';
import { type Digest, KkError, type Manifest, TargetState, canonicalManifestJson, renderMetaYaml, renderSha256sum, targetStatus } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { EXIT } from '../exit-codes.js';
import { stateDirFlag, storeFlags } from '../flags.js';

interface ManifestResult {
  project: string;
  app: string;
  version: string;
  digest: Digest;
  manifest: Manifest;
}

const FORMATS = ['json', 'meta.yaml', 'sha256sum'] as const;

export default class ManifestCommand extends KkCommand<typeof ManifestCommand> {
  static override summary = 'Print the manifest of a version: canonical JSON, the seed\'s meta.yaml, or sha256sum lines.';
  static override description = `The version comes from the store (--project --app --version) or is the one deployed at --path (from kk's local state). --format sha256sum prints lines that \`sha256sum -c\` accepts when run inside the deploy directory.`;
  static override examples = [
    '<%= config.bin %> manifest --project myproject --app myapp --version 1.0.0 --format meta.yaml',
    'cd /opt/apps/myproject/myapp && <%= config.bin %> manifest --path . --format sha256sum | sha256sum -c --quiet',
  ];
  static override flags = {
    project: Flags.string({ char: 'p', summary: 'Project name.', helpValue: 'NAME', dependsOn: ['app', 'version'], exclusive: ['path'] }),
    app: Flags.string({ char: 'a', summary: 'App name.', helpValue: 'NAME', dependsOn: ['project', 'version'] }),
    version: Flags.string({ summary: 'A version name, "latest" or a channel.', helpValue: 'VERSION', dependsOn: ['project', 'app'] }),
    path: Flags.string({ summary: 'Instead of a store version: the version deployed at this directory.', helpValue: 'DIR' }),
    format: Flags.string({ char: 'f', summary: 'Output format.', options: [...FORMATS], default: 'json' }),
    ...storeFlags,
    'state-dir': stateDirFlag,
  };

  protected async exec(): Promise<Outcome<ManifestResult>> {
    const f = this.flags;
    let digest: Digest;
    let manifest: Manifest | undefined;
    if (f.project && f.app && f.version) {
      const store = await this.openStore(await this.loadKkConfig({ required: false }));
      digest = (await store.resolveVersion(f.project, f.app, f.version)).manifest;
      manifest = await store.getManifest(digest);
    } else if (f.path) {
      const status = await targetStatus(f.path, this.stateDir());
      if (!status.current) throw new KkError('NOT_FOUND', `kk has not deployed anything to ${status.target}`, { hint: 'name a store version: --project P --app A --version V' });
      digest = status.current.manifest;
      manifest = await new TargetState(status.target, this.stateDir()).loadManifest(digest);
      manifest ??= await (await this.openStore(await this.loadKkConfig({ required: false }))).getManifest(digest);
    } else {
      throw new Errors.CLIError('give --project P --app A --version V, or --path DIR', { exit: EXIT.USAGE });
    }
    const result: ManifestResult = { project: manifest.project, app: manifest.app, version: manifest.version, digest, manifest };
    return {
      result,
      essential: true,
      render: (r) => {
        if (f.format === 'meta.yaml') return renderMetaYaml(r.manifest).trimEnd();
        if (f.format === 'sha256sum') return renderSha256sum(r.manifest).trimEnd();
        return canonicalManifestJson(r.manifest);
      },
    };
  }
}
