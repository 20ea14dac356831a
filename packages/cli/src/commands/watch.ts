import { Flags } from '@oclif/core';
import { KkError } from '@kk/core';
import { EVENT_STREAM_PATH, EVENT_STREAM_PROTOCOL, STREAM_CLOSE } from '@kk/server';
import WebSocket from 'ws';
import { KkCommand, type Outcome } from '../base.js';
import { serverFlags, serverOf } from './token/list.js';

interface WatchResult {
  events: number;
  last_seq: number;
  reconnects: number;
  stopped: string;
}

type Ev = { seq: number; type: string; time: string; project?: string; app?: string; version?: string; actor?: { token?: string }; details?: Record<string, unknown> };

/** One line for a person: seq, time, type, project/app version, then the details that say what happened. */
export function eventLine(e: Ev): string {
  const where = e.project ? `${e.project}${e.app ? `/${e.app}` : ''}${e.version ? ` ${e.version}` : ''}` : '';
  const details = Object.entries(e.details ?? {})
    .filter(([, v]) => v !== null && v !== undefined && typeof v !== 'object')
    .slice(0, 10)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ');
  return [`#${e.seq}`, e.time, e.type, where, details, e.actor?.token ? `by ${e.actor.token}` : ''].filter(Boolean).join('  ').slice(0, 2000);
}

export default class Watch extends KkCommand<typeof Watch> {
  static override summary = 'Print the server\'s events as they happen (nodes, targets, sync tasks, deploys, pushes, promotes).';
  static override description = `Opens the server's event stream (a WebSocket at ${EVENT_STREAM_PATH}). With --since it first prints every event after that seq, then follows live; without, only new events. A lost connection (server restart, network) is reopened with backoff from the last seq seen, so nothing is missed or printed twice. --json prints one JSON object per event and line, and the summary document when it stops. Ctrl-C stops it (exit 0).`;
  static override examples = [
    '<%= config.bin %> watch',
    '<%= config.bin %> watch --since 1200 --type task.failed --type sync.*',
    '<%= config.bin %> watch -p shop --json --count 10',
  ];
  static override flags = {
    ...serverFlags,
    since: Flags.integer({ summary: 'Start after this event seq (replay, then live) [default: now].', min: 0, helpValue: 'SEQ' }),
    type: Flags.string({ summary: 'Only this type (task.failed) or prefix (task.*); repeatable.', multiple: true, helpValue: 'TYPE' }),
    project: Flags.string({ char: 'p', summary: 'Only events about this project.', helpValue: 'NAME' }),
    app: Flags.string({ char: 'a', summary: 'Only events about this app.', helpValue: 'NAME' }),
    count: Flags.integer({ summary: 'Stop after this many events.', min: 1, helpValue: 'N' }),
  };

  protected async exec(): Promise<Outcome<WatchResult>> {
    const f = this.flags;
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const json = this.flags.json === true;
    const out: WatchResult = { events: 0, last_seq: f.since ?? -1, reconnects: 0, stopped: '' };
    // Ctrl-C ends the watch normally instead of the base command's "interrupted".
    process.removeAllListeners('SIGINT');
    process.removeAllListeners('SIGTERM');
    let stop: ((why: string) => void) | undefined;
    let stopped = '';
    for (const s of ['SIGINT', 'SIGTERM'] as const) process.once(s, () => ((stopped = s), stop?.(s)));
    let connected = false;
    let backoff = 500;
    while (!stopped) {
      const q = new URLSearchParams();
      if (out.last_seq >= 0) q.set('since', String(out.last_seq));
      for (const t of f.type ?? []) q.append('type', t);
      if (f.project) q.set('project', f.project);
      if (f.app) q.set('app', f.app);
      const wsUrl = `${url.replace(/^http/, 'ws').replace(/\/+$/, '')}${EVENT_STREAM_PATH}${q.size ? `?${q}` : ''}`;
      const end = await new Promise<{ code: number; reason: string; error?: Error; done?: boolean }>((resolve) => {
        const ws = new WebSocket(wsUrl, [EVENT_STREAM_PROTOCOL], { headers: token ? { authorization: `Bearer ${token}` } : {}, handshakeTimeout: 15_000 });
        let error: Error | undefined;
        stop = (why) => {
          ws.close(1000, why);
          setTimeout(() => ws.terminate(), 1_000).unref();
        };
        ws.on('error', (err) => (error = err));
        ws.on('message', (data) => {
          let m: { op?: string; seq?: number; event?: Ev };
          try {
            m = JSON.parse(String(data));
          } catch {
            return;
          }
          if (m.op === 'hello') {
            connected = true;
            backoff = 500;
            if (out.last_seq < 0) out.last_seq = m.seq ?? 0;
          } else if (m.op === 'live' && typeof m.seq === 'number') out.last_seq = Math.max(out.last_seq, m.seq);
          else if (m.op === 'event' && m.event && typeof m.seq === 'number') {
            if (m.seq <= out.last_seq) return;
            out.last_seq = m.seq;
            out.events++;
            process.stdout.write(`${json ? JSON.stringify(m.event) : eventLine(m.event)}\n`);
            if (f.count && out.events >= f.count) {
              stopped = 'count';
              stop?.('count reached');
            }
          }
        });
        ws.on('close', (code, reason) => resolve({ code, reason: String(reason), ...(error ? { error } : {}) }));
      });
      if (stopped) break;
      const why = end.reason || end.error?.message || `code ${end.code}`;
      if (end.code === STREAM_CLOSE.AUTH) throw new KkError('AUTH', `the server refused the token: ${why}`, { hint: 'pass --token (or set KK_TOKEN) with a valid kk token' });
      if (end.code === STREAM_CLOSE.FORBIDDEN) throw new KkError('FORBIDDEN', why);
      if (end.code === STREAM_CLOSE.BAD_REQUEST) throw new KkError('CONFIG_INVALID', why, { hint: 'see kk watch --help' });
      if (!connected) {
        throw new KkError('BACKEND', `cannot open the event stream at ${wsUrl}: ${why}`, { hint: 'is the kk server running there (kk serve)? check --server' });
      }
      // Slow reader: the replay from the last seq catches up, so come back at once.
      const wait = end.code === STREAM_CLOSE.SLOW_CONSUMER ? 0 : backoff;
      backoff = Math.min(10_000, backoff * 2);
      out.reconnects++;
      process.stderr.write(`kk: event stream closed (${end.code}: ${why}); reconnecting in ${wait / 1000} s from seq ${out.last_seq}\n`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, wait);
        stop = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    out.stopped = stopped;
    return { result: out, render: (r) => (json ? '' : `kk: watched ${r.events} event(s), last seq ${r.last_seq} (${r.stopped})`) };
  }
}
