import { Flags } from '@oclif/core';
import { assertChannelName } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { appFlag, projectFlag, storeFlags, versionFlag } from '../flags.js';

interface PromoteResult {
  project: string;
  app: string;
  channel: string;
  version: string;
  manifest: string;
  /** The version the channel pointed to before, if any. */
  previous: string | null;
}

export default class Promote extends KkCommand<typeof Promote> {
  static override summary = 'Point a channel (default "promoted") at a version.';
  static override description =
    'What `POST /promote` does on a server, for any store: the channel records the version and its manifest digest, and keeps its history for `kk rollback` and the server\'s `/rollback`. On a kk server store this needs the promote permission and sends the `promote` event. The version may be a name, `latest`, or another channel.';
  static override examples = [
    '<%= config.bin %> promote --project shop --app web --version 1.4.2',
    '<%= config.bin %> promote -p shop -a web --version latest --channel staging --store https://kk.example.com --json',
  ];
  static override flags = {
    project: projectFlag,
    app: appFlag,
    version: versionFlag('Version to promote: a name, `latest`, or a channel.'),
    channel: Flags.string({ summary: 'Channel to move [default: promoted].', default: 'promoted', helpValue: 'NAME' }),
    ...storeFlags,
  };

  protected async exec(): Promise<Outcome<PromoteResult>> {
    const { project, app, channel } = this.flags;
    assertChannelName(channel);
    const store = await this.openStore(await this.loadKkConfig({ required: false }));
    const target = await store.resolveVersion(project, app, this.flags.version);
    const prev = await store.getChannel(project, app, channel);
    const next = await store.setChannel(project, app, channel, target.version);
    return {
      result: { project, app, channel, version: next.version, manifest: next.manifest, previous: prev?.version ?? null },
      render: (r) => `kk: ${r.project}/${r.app} ${r.channel} -> ${r.version}${r.previous && r.previous !== r.version ? ` (was ${r.previous})` : ''}`,
    };
  }
}
