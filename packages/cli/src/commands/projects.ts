import { KkCommand, type Outcome } from '../base.js';
import { storeFlags } from '../flags.js';

export default class Projects extends KkCommand<typeof Projects> {
  static override summary = 'List the projects in the store.';
  static override examples = ['<%= config.bin %> projects', '<%= config.bin %> projects --store /var/lib/kk/store --json'];
  static override flags = { ...storeFlags };

  protected async exec(): Promise<Outcome<{ projects: string[] }>> {
    const store = await this.openStore(await this.loadKkConfig({ required: false }));
    const projects = (await store.listProjects()).sort();
    return { result: { projects }, essential: true, render: (r) => r.projects };
  }
}
