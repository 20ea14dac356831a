import { KkError, type VersionInfo } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { appFlag, projectFlag, storeFlags } from '../flags.js';
import { shortDigest, table } from '../format.js';

interface VersionRow extends VersionInfo {
  /** Channels (such as `promoted`) that point to this version. */
  channels: string[];
}

interface VersionsResult {
  project: string;
  app: string;
  count: number;
  /** Newest first. */
  versions: VersionRow[];
}

export default class Versions extends KkCommand<typeof Versions> {
  static override summary = 'List the versions of an app, newest first.';
  static override description = 'Shows each version with its creation time, who pushed it, its manifest digest and the channels (such as "promoted") that point to it. Works with just --store when there is no config file.';
  static override examples = ['<%= config.bin %> versions --project myproject --app myapp', '<%= config.bin %> versions -p myproject -a myapp --store /var/lib/kk/store --json'];
  static override flags = {
    project: projectFlag,
    app: appFlag,
    ...storeFlags,
  };

  protected async exec(): Promise<Outcome<VersionsResult>> {
    const { project, app } = this.flags;
    const store = await this.openStore(await this.loadKkConfig({ required: false }));
    const [versions, channelNames] = await Promise.all([store.listVersions(project, app), store.listChannels(project, app)]);
    if (versions.length === 0 && channelNames.length === 0 && !(await store.listApps(project)).includes(app)) {
      throw new KkError('NOT_FOUND', `${project}/${app} does not exist in this store`, {
        hint: `\`kk apps --project ${project}\` lists its apps; check the names and the store`,
        details: { project, app },
      });
    }
    const byVersion = new Map<string, string[]>();
    for (const name of channelNames) {
      const ch = await store.getChannel(project, app, name);
      if (ch) byVersion.set(ch.version, [...(byVersion.get(ch.version) ?? []), name]);
    }
    const rows = versions.map((v) => ({ ...v, channels: byVersion.get(v.version) ?? [] }));
    return {
      result: { project, app, count: rows.length, versions: rows },
      essential: true,
      render: (r) =>
        r.count === 0
          ? `${project}/${app} has no versions`
          : table([
              ['VERSION', 'CREATED', 'BY', 'MANIFEST', 'CHANNELS'],
              ...r.versions.map((v) => [v.version, v.created, v.by, shortDigest(v.manifest), v.channels.join(',')]),
            ]),
    };
  }
}
