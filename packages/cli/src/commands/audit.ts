import { Flags } from '@oclif/core';
import type { AuditEntry } from '@kk/server';
import { KkServerClient } from '@kk/server';
import { KkCommand, type Outcome } from '../base.js';
import { parseDuration, table } from '../format.js';
import { serverFlags, serverOf } from './token/list.js';

interface AuditResult {
  entries: AuditEntry[];
  /** Matching entries in all (not only this page), when the server counted them. */
  total: number | null;
  /** Pass as --cursor for the next page; null at the end. */
  next_cursor: number | null;
}

/** `1h`, `30m`, `2d` ago, or an ISO time. */
function timeOf(text: string, flag: string): string {
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const t = Date.parse(text);
    if (!Number.isNaN(t)) return new Date(t).toISOString();
  }
  return new Date(Date.now() - parseDuration(text, flag)).toISOString();
}

export default class Audit extends KkCommand<typeof Audit> {
  static override summary = 'Show the audit log of a kk server: pushes, pulls, promotes, rollbacks, deletes and token changes.';
  static override description = `Lists audit entries, newest first (--order asc for oldest first), filtered by action, project, app, version, token id, agent id and time. --since and --until take a duration back from now (30m, 1h, 2d) or an ISO time. Needs a token with the admin permission; a scoped admin sees its own scope only. A page holds --limit entries (default 50, at most 500); --all follows the cursor to the end.`;
  static override examples = [
    '<%= config.bin %> audit --server https://kk.example.com --token "$ADMIN" --project web --since 1h',
    '<%= config.bin %> audit --action push --app site --json',
    '<%= config.bin %> audit --token-id 3f9c0a1b2c3d4e5f6a7b --since 2026-12-01T00:00:00Z --all',
  ];
  static override flags = {
    ...serverFlags,
    action: Flags.string({ summary: 'Only this action (push, pull, promote, rollback, delete, token.create, token.revoke, webhook.create, retention, ...).', helpValue: 'ACTION' }),
    project: Flags.string({ char: 'p', summary: 'Only this project.', helpValue: 'NAME' }),
    app: Flags.string({ char: 'a', summary: 'Only this app.', helpValue: 'NAME' }),
    version: Flags.string({ summary: 'Only this version.', helpValue: 'VERSION' }),
    'token-id': Flags.string({ summary: 'Only what this token id did.', helpValue: 'ID' }),
    agent: Flags.string({ summary: 'Only what this agent (X-Kk-Agent) did.', helpValue: 'ID' }),
    since: Flags.string({ summary: 'Entries at or after this time: a duration back from now (1h, 2d) or an ISO time.', helpValue: 'WHEN' }),
    until: Flags.string({ summary: 'Entries at or before this time: a duration back from now or an ISO time.', helpValue: 'WHEN' }),
    limit: Flags.integer({ summary: 'Entries per page.', default: 50, min: 1, max: 500, helpValue: 'N' }),
    order: Flags.string({ summary: 'desc: newest first; asc: oldest first.', options: ['asc', 'desc'], default: 'desc' }),
    cursor: Flags.integer({ summary: 'Continue after a page (its next_cursor).', min: 0, helpValue: 'N' }),
    all: Flags.boolean({ summary: 'Follow the cursor to the last matching entry (bounded at 100,000 entries).', default: false }),
  };

  protected async exec(): Promise<Outcome<AuditResult>> {
    const f = this.flags;
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const client = new KkServerClient(url, token);
    const query = {
      action: f.action,
      project: f.project,
      app: f.app,
      version: f.version,
      token: f['token-id'],
      agent: f.agent,
      since: f.since === undefined ? undefined : timeOf(f.since, '--since'),
      until: f.until === undefined ? undefined : timeOf(f.until, '--until'),
      limit: f.limit,
      order: f.order as 'asc' | 'desc',
      cursor: f.cursor,
    };
    const entries: AuditEntry[] = [];
    let page = await client.audit(query);
    const total = page.total ?? null;
    entries.push(...page.items);
    while (f.all && page.next_cursor !== null && entries.length < 100_000) {
      page = await client.audit({ ...query, cursor: page.next_cursor });
      entries.push(...page.items);
    }
    return {
      result: { entries, total, next_cursor: page.next_cursor },
      essential: true,
      render: (r) => {
        if (r.entries.length === 0) return 'no audit entries match';
        const lines = [
          table([
            ['TIME', 'ACTION', 'PROJECT/APP', 'VERSION', 'TOKEN', 'AGENT', 'ADDRESS'],
            ...r.entries.map((e) => [e.time, e.action, e.project ? `${e.project}/${e.app ?? '*'}` : '-', e.version ?? '-', e.token, e.agent ?? '-', e.address ?? '-']),
          ]),
        ];
        if (r.next_cursor !== null) lines.push(`(${r.entries.length}${r.total !== null ? ` of ${r.total}` : ''}; more with --cursor ${r.next_cursor} or --all)`);
        return lines;
      },
    };
  }
}
