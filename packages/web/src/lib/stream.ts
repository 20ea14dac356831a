// The server's event stream protocol (packages/server/src/ws.ts): the URL, the token as a
// subprotocol, the messages and which close codes mean "do not retry".
import type { KkEvent } from './live.svelte.js';

export const STREAM = {
  url(base: string, since: number): string {
    const u = new URL('/api/v1/events/stream', base);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    if (since > 0) u.searchParams.set('since', String(since));
    return u.toString();
  },
  protocols(token: string): string[] {
    return ['kk.v1', `kk.bearer.${token}`];
  },
  /** The events a message carries (`hello` and `live` carry none but advance nothing either). */
  events(msg: unknown): KkEvent[] {
    const m = msg as { op?: string; seq?: number; event?: KkEvent };
    if (m?.op === 'event' && m.event) return [{ ...m.event, seq: m.seq ?? m.event.seq }];
    return [];
  },
  /** `live` ends the replay: its seq is where a reconnect resumes even when nothing matched. */
  caughtUp(msg: unknown): number | undefined {
    const m = msg as { op?: string; seq?: number };
    return m?.op === 'live' && typeof m.seq === 'number' ? m.seq : undefined;
  },
  /** 4401 (token missing, unknown, expired, revoked), 4403 (no permission), 4400 (bad query). */
  isAuthFailure(code: number): boolean {
    return code === 4401 || code === 4403 || code === 4400;
  },
};
