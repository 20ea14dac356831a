// The audit log (seed 11, DESIGN 9): one row per action, indexed by time, project/app, action,
// token, agent and version. Queries filter in SQL, order by time (then seq), and page either by
// offset (the API's original shape) or by cursor (the seq of a page's last row: stable while rows
// are being added).
import { randomBytes } from 'node:crypto';
import type { Selectable } from 'kysely';
import type { ControlDb, Executor } from './db.js';
import type { AuditTable } from './schema.js';
import { stripUndefined } from './util.js';

export interface AuditEntry {
  id: string;
  time: string;
  /** push, pull, promote, rollback, delete, token.create, token.revoke, retention, upload... */
  action: string;
  project?: string;
  app?: string;
  version?: string;
  manifest?: string;
  channel?: string;
  /** The token that acted (`admin` for KK_ADMIN_TOKEN, `scheduler` for the nightly run). */
  token: string;
  /** The client's `X-Kk-Agent` header. */
  agent?: string;
  address?: string;
  details?: Record<string, unknown>;
}

export interface AuditFilter {
  action?: string;
  project?: string;
  app?: string;
  version?: string;
  token?: string;
  agent?: string;
  /** ISO times, inclusive. */
  since?: string;
  until?: string;
  /** Restrict to what a scoped admin may see: entries of this project (and these apps). */
  visible?: { project: string; apps?: string[] };
}

export interface AuditPage {
  limit: number;
  offset: number;
  order: 'asc' | 'desc';
  /** Cursor: continue after this seq (in `order`); overrides offset. */
  cursor?: number;
}

export interface AuditResult {
  items: AuditEntry[];
  limit: number;
  offset: number;
  order: string;
  next_offset: number | null;
  /** Pass as `cursor` for the next page; null at the end. */
  next_cursor: number | null;
  /** Rows matching the filter (counted only for offset pages, where it is cheap enough to matter). */
  total?: number;
}

let counter = 0;

export function auditId(ms: number): string {
  counter = (counter + 1) % 1_000_000;
  return `${String(ms).padStart(13, '0')}-${String(counter).padStart(6, '0')}-${randomBytes(4).toString('hex')}`;
}

export function auditRow(e: AuditEntry): Omit<AuditTable, 'seq'> {
  return {
    id: e.id,
    time: e.time,
    action: e.action,
    project: e.project ?? null,
    app: e.app ?? null,
    version: e.version ?? null,
    manifest: e.manifest ?? null,
    channel: e.channel ?? null,
    token: e.token,
    agent: e.agent ?? null,
    address: e.address ?? null,
    details: e.details === undefined ? null : JSON.stringify(e.details),
  };
}

function fromRow(r: Selectable<AuditTable>): AuditEntry {
  const e: AuditEntry = { id: r.id, time: r.time, action: r.action, token: r.token };
  for (const k of ['project', 'app', 'version', 'manifest', 'channel', 'agent', 'address'] as const) if (r[k] !== null) e[k] = r[k];
  if (r.details !== null) e.details = JSON.parse(r.details) as Record<string, unknown>;
  // Field order as the store-backed log wrote it.
  const { id, time, ...rest } = e;
  return { ...rest, id, time } as AuditEntry;
}

export class AuditLog {
  constructor(private readonly cdb: ControlDb) {}

  async record(entry: Omit<AuditEntry, 'id' | 'time'> & { time?: string }, ex: Executor = this.cdb.db): Promise<AuditEntry> {
    const now = entry.time ? new Date(entry.time) : new Date();
    const full = { ...stripUndefined(entry), id: auditId(now.getTime()), time: now.toISOString() } as AuditEntry;
    await ex.insertInto('audit').values(auditRow(full)).execute();
    return full;
  }

  /** Entries matching `filter`, newest first (or oldest with `order=asc`), one page. */
  async query(filter: AuditFilter, page: AuditPage): Promise<AuditResult> {
    const db = this.cdb.db;
    let q = db.selectFrom('audit');
    for (const k of ['action', 'project', 'app', 'version', 'token', 'agent'] as const) {
      const v = filter[k];
      if (v) q = q.where(k, '=', v);
    }
    if (filter.since) q = q.where('time', '>=', filter.since);
    if (filter.until) q = q.where('time', '<=', filter.until);
    if (filter.visible) {
      q = q.where('project', '=', filter.visible.project);
      if (filter.visible.apps) q = q.where('app', 'in', filter.visible.apps.length ? filter.visible.apps : ['']);
    }
    let rowsQ = q.selectAll().orderBy('time', page.order).orderBy('seq', page.order);
    if (page.cursor !== undefined) {
      // The cursor is the seq of the last row of the previous page; continue after its (time, seq).
      const at = await db.selectFrom('audit').select('time').where('seq', '=', page.cursor).executeTakeFirst();
      if (!at) return { items: [], limit: page.limit, offset: 0, order: page.order, next_offset: null, next_cursor: null };
      const cmp = page.order === 'desc' ? '<' : '>';
      const c = page.cursor;
      rowsQ = rowsQ.where((eb) => eb.or([eb('time', cmp, at.time), eb.and([eb('time', '=', at.time), eb('seq', cmp, c)])]));
    } else if (page.offset) rowsQ = rowsQ.offset(page.offset);
    const rows = await rowsQ.limit(page.limit + 1).execute();
    const more = rows.length > page.limit;
    const pageRows = rows.slice(0, page.limit);
    const out: AuditResult = {
      items: pageRows.map(fromRow),
      limit: page.limit,
      offset: page.cursor === undefined ? page.offset : 0,
      order: page.order,
      next_offset: more && page.cursor === undefined ? page.offset + pageRows.length : null,
      next_cursor: more ? Number(pageRows[pageRows.length - 1]!.seq) : null,
    };
    if (page.cursor === undefined) {
      const c = await q.select((eb) => eb.fn.countAll().as('c')).executeTakeFirst();
      out.total = Number(c?.c ?? 0);
    }
    return out;
  }
}
