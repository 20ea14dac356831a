import { Flags } from '@oclif/core';
import { FleetClient, parseTags } from '@kk/agent';
import { KkCommand, type Outcome } from '../../../base.js';
import { serverFlags, serverOf } from '../../token/list.js';

export default class NodeTokenCreate extends KkCommand<typeof NodeTokenCreate> {
  static override summary = 'Create a registration token for enrolling agents; the secret is printed alone on stdout.';
  static override description = 'An agent trades it once for a node token of its own (kk agent --registration-token). It expires (--expires) and can be revoked; the server keeps only its hash. Needs a global admin token.';
  static override examples = ['T=$(<%= config.bin %> node token create --server https://kk.example.com --token "$ADMIN" --expires 24h)', '<%= config.bin %> node token create --expires 1h --tags region=eu --json'];
  static override flags = {
    ...serverFlags,
    expires: Flags.string({ summary: 'Lifetime such as 24h or 30m [default: no expiry].', helpValue: 'DURATION' }),
    name: Flags.string({ summary: 'A label for listings.', helpValue: 'TEXT' }),
    tags: Flags.string({ summary: 'Tags every node enrolled with it gets, key=value[,...].', helpValue: 'TAGS' }),
  };

  protected async exec(): Promise<Outcome<{ token: string; id: string; expires: string | null }>> {
    const f = this.flags;
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const result = await new FleetClient(url, token).createRegistrationToken({ ...(f.expires ? { expires: f.expires } : {}), ...(f.name ? { name: f.name } : {}), ...(f.tags ? { tags: parseTags(f.tags) } : {}) });
    return {
      result,
      essential: true,
      render: (r) => {
        if (!this.common.quiet) process.stderr.write(`kk: registration token ${r.id}${r.expires ? `, expires ${r.expires}` : ''} (shown once)\n`);
        return r.token;
      },
    };
  }
}
