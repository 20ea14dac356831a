import { KkCommand, type Outcome } from '../base.js';
import { projectFlag, storeFlags } from '../flags.js';

export default class Apps extends KkCommand<typeof Apps> {
  static override summary = 'List the apps of a project.';
  static override examples = ['<%= config.bin %> apps --project myproject', '<%= config.bin %> apps -p myproject --store /var/lib/kk/store --json'];
  static override flags = { project: projectFlag, ...storeFlags };

  protected async exec(): Promise<Outcome<{ project: string; apps: string[] }>> {
    const { project } = this.flags;
    const store = await this.openStore(await this.loadKkConfig({ required: false }));
    const apps = (await store.listApps(project)).sort();
    return { result: { project, apps }, essential: true, render: (r) => r.apps };
  }
}
