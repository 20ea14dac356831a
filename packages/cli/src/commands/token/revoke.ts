import { Args } from '@oclif/core';
import { KkServerClient, type PublicToken } from '@kk/server';
import { KkCommand, type Outcome } from '../../base.js';
import { serverFlags, serverOf } from './list.js';

export default class TokenRevoke extends KkCommand<typeof TokenRevoke> {
  static override summary = 'Revoke a token on a kk server; it is refused from the next request on.';
  static override examples = ['<%= config.bin %> token revoke 3f2a9c0d1e5b7a8c6d4e --server https://kk.example.com --token "$ADMIN"'];
  static override args = { id: Args.string({ description: 'Token id (see kk token list).', required: true }) };
  static override flags = { ...serverFlags };

  protected async exec(): Promise<Outcome<PublicToken>> {
    const { url, token } = await serverOf(this.flags, () => this.loadKkConfig({ required: false }));
    const result = await new KkServerClient(url, token).revokeToken(this.args.id);
    return { result, render: (r) => `kk: token ${r.id} (${r.scope}) revoked at ${r.revoked}` };
  }
}
