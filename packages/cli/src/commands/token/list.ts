import { Flags } from '@oclif/core';
import { type KkConfig, KkError } from '@kk/core';
import { KkServerClient, type PublicToken } from '@kk/server';
import { KkCommand, type Outcome } from '../../base.js';
import { table } from '../../format.js';

/** --server and --token, shared by the token commands. */
export const serverFlags = {
  server: Flags.string({ summary: 'Server URL [default: the config file\'s server_url].', env: 'KK_SERVER', helpValue: 'URL' }),
  token: Flags.string({ summary: 'Token to authenticate with [default: KK_TOKEN, else the config file\'s token].', helpValue: 'TOKEN' }),
  config: Flags.string({ summary: 'Config file [default: ./.kkartifact.yml].', env: 'KK_CONFIG', helpValue: 'FILE' }),
};

/** The server and token: flags > KK_SERVER/KK_TOKEN > the config file's `server_url` and `token`. */
export async function serverOf(
  flags: { server?: string | undefined; token?: string | undefined },
  loadConfig: () => Promise<KkConfig | undefined>,
): Promise<{ url: string; token: string | undefined }> {
  const config = flags.server && (flags.token || process.env.KK_TOKEN) ? undefined : await loadConfig();
  const url = flags.server ?? (config?.store && /^https?:\/\//.test(config.store) ? config.store : undefined);
  if (!url) throw new KkError('CONFIG_INVALID', 'no kk server given', { hint: 'pass --server URL, set KK_SERVER, or put server_url in .kkartifact.yml' });
  return { url, token: flags.token ?? process.env.KK_TOKEN ?? config?.token };
}

export default class TokenList extends KkCommand<typeof TokenList> {
  static override summary = 'List the tokens a kk server holds (those your token may administer).';
  static override examples = ['<%= config.bin %> token list --server https://kk.example.com --token "$ADMIN"', '<%= config.bin %> token list --json'];
  static override flags = { ...serverFlags };

  protected async exec(): Promise<Outcome<{ tokens: PublicToken[] }>> {
    const { url, token } = await serverOf(this.flags, () => this.loadKkConfig({ required: false }));
    const tokens = await new KkServerClient(url, token).listTokens();
    return {
      result: { tokens },
      essential: true,
      render: (r) =>
        r.tokens.length === 0
          ? 'no tokens'
          : table([
              ['ID', 'SCOPE', 'PERMISSIONS', 'EXPIRES', 'STATE', 'NAME'],
              ...r.tokens.map((t) => [t.id, t.scope, t.permissions.join(','), t.expires ?? 'never', t.revoked ? 'revoked' : t.expires && Date.parse(t.expires) <= Date.now() ? 'expired' : 'active', t.name]),
            ]),
    };
  }
}
