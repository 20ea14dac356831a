// Live updates: one WebSocket per tab on the server's event stream, resumed from the last seq
// seen, with reconnects backing off (1 s doubling to 30 s, jittered) and a stop on an auth
// failure. Views subscribe to events and refresh what they show.
import { apiBase, savedToken } from './api.js';
import { STREAM } from './stream.js';

export interface KkEvent {
  seq: number;
  type: string;
  time?: string;
  project?: string | null;
  app?: string | null;
  [k: string]: unknown;
}

type Listener = (e: KkEvent) => void;

export const live = $state({ status: 'off' as 'off' | 'connecting' | 'live' | 'retrying' | 'stopped', reason: '', seq: 0, received: 0 });

const listeners = new Set<Listener>();
let ws: WebSocket | undefined;
let timer: ReturnType<typeof setTimeout> | undefined;
let attempt = 0;
let running = false;

/** Call `fn` for each event; returns the unsubscribe function (use it in an $effect cleanup). */
export function onEvent(fn: Listener): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function deliver(e: KkEvent): void {
  if (typeof e.seq === 'number') {
    if (e.seq <= live.seq) return;
    live.seq = e.seq;
  }
  live.received++;
  for (const fn of [...listeners]) {
    try {
      fn(e);
    } catch (err) {
      console.error('event listener failed', err);
    }
  }
}

/** Start following from `seq` (the seq a list response carried); idempotent. */
export function startLive(seq: number): void {
  if (running) return;
  running = true;
  live.seq = Math.max(live.seq, seq);
  connect();
}

export function stopLive(reason = ''): void {
  running = false;
  clearTimeout(timer);
  const s = ws;
  ws = undefined;
  s?.close(1000);
  live.status = reason ? 'stopped' : 'off';
  live.reason = reason;
}

function connect(): void {
  const token = savedToken();
  if (!running || !token) return;
  live.status = attempt === 0 ? 'connecting' : 'retrying';
  const url = STREAM.url(apiBase(), live.seq);
  let opened = false;
  let s: WebSocket;
  try {
    s = new WebSocket(url, STREAM.protocols(token));
  } catch (err) {
    live.reason = (err as Error).message;
    return retry();
  }
  ws = s;
  s.onopen = () => {
    opened = true;
    attempt = 0;
    live.status = 'live';
    live.reason = '';
  };
  s.onmessage = (m) => {
    let msg: unknown;
    try {
      msg = JSON.parse(String(m.data));
    } catch {
      return;
    }
    for (const e of STREAM.events(msg)) deliver(e);
    const upTo = STREAM.caughtUp(msg);
    if (upTo !== undefined && upTo > live.seq) live.seq = upTo;
  };
  s.onclose = (c) => {
    if (ws !== s) return;
    ws = undefined;
    if (!running) return;
    const auth = STREAM.isAuthFailure(c.code);
    if (auth) {
      stopLive(`the server refused the token (close ${c.code}${c.reason ? `: ${c.reason}` : ''}); sign in again`);
      return;
    }
    live.reason = opened ? `connection closed (${c.code}${c.reason ? `: ${c.reason}` : ''})` : 'cannot connect';
    retry();
  };
}

function retry(): void {
  if (!running) return;
  live.status = 'retrying';
  const delay = Math.min(30_000, 1000 * 2 ** attempt) * (0.75 + Math.random() * 0.5);
  attempt = Math.min(attempt + 1, 6);
  clearTimeout(timer);
  timer = setTimeout(connect, delay);
}
