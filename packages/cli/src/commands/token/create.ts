import { Flags } from '@oclif/core';
import { KkServerClient, type PublicToken } from '@kk/server';
import { KkCommand, type Outcome } from '../../base.js';
import { serverFlags, serverOf } from './list.js';

export default class TokenCreate extends KkCommand<typeof TokenCreate> {
  static override summary = 'Create an access token on a kk server; the token is printed once, alone on stdout.';
  static override description = `A token has a scope (global, one project, or apps of one project) and permissions (pull, push, promote, deploy, admin; deploy starts deploys on nodes in its scope; admin includes the others within its scope). The server stores only a hash: the token is shown here and never again. A token can only create tokens with no more rights than its own, and needs the admin permission to create any.`;
  static override examples = [
    '<%= config.bin %> token create --server https://kk.example.com --token "$ADMIN" --scope app:shop/web --permissions pull --expires 30d --json',
    '<%= config.bin %> token create --scope project:shop --permissions push,pull,promote --name ci',
  ];
  static override flags = {
    ...serverFlags,
    scope: Flags.string({ summary: 'global, project:P, or app:P/A (app:P/A1,A2 for several apps).', required: true, helpValue: 'SCOPE' }),
    permissions: Flags.string({ summary: 'Comma-separated: pull, push, promote, deploy, admin.', required: true, helpValue: 'LIST' }),
    expires: Flags.string({ summary: 'Lifetime such as 30d or 12h, or an ISO time [default: no expiry, or the creating token\'s].', helpValue: 'DURATION' }),
    name: Flags.string({ summary: 'A label for listings.', helpValue: 'TEXT' }),
  };

  protected async exec(): Promise<Outcome<PublicToken & { token: string }>> {
    const f = this.flags;
    const { url, token } = await serverOf(this.flags, () => this.loadKkConfig({ required: false }));
    const req = { scope: f.scope, permissions: f.permissions.split(',').map((p) => p.trim()).filter(Boolean), ...(f.expires ? { expires: f.expires } : {}), ...(f.name ? { name: f.name } : {}) };
    const result = await new KkServerClient(url, token).createToken(req);
    return {
      result,
      essential: true,
      // stdout holds the secret alone, so `T=$(kk token create ...)` is the token; the rest is stderr.
      render: (r) => {
        if (!this.common.quiet) {
          process.stderr.write(`kk: token ${r.id}: ${r.scope}, ${r.permissions.join(',')}${r.expires ? `, expires ${r.expires}` : ''} (shown once; the server keeps only its hash)\n`);
        }
        return r.token;
      },
    };
  }
}
