// The live event stream (DESIGN 12, issue 12): a WebSocket at /api/v1/events/stream that sends
// the events after `since` from the database (replay), then the new ones as they commit (live),
// scoped like GET /api/v1/events. One tail per server reads new events once and fans them out;
// a connection joins it only when its own replay has caught up, so nothing is skipped or sent
// twice. Memory stays bounded: replay waits for each page to reach the socket, and a live
// connection whose unsent bytes pass the limit is dropped (close 4429) instead of buffered; it
// reconnects from the last seq it saw. The token comes as a subprotocol (`kk.bearer.<token>`,
// what browsers can send) or an Authorization header, and is checked again at every ping.
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { KkError, isKkError } from '@kk/core';
import type { StoredEvent } from '@kk/control';
import { WebSocket, WebSocketServer } from 'ws';
import type { ServerContext } from './context.js';
import type { Principal } from './tokens.js';

export const EVENT_STREAM_PATH = '/api/v1/events/stream';
/** The subprotocol a client must offer (and the server selects). */
export const EVENT_STREAM_PROTOCOL = 'kk.v1';
/** Prefix of the subprotocol that carries the token. */
export const EVENT_STREAM_TOKEN_PREFIX = 'kk.bearer.';

/** Close codes (also in /tmp ws-api notes and the README). */
export const STREAM_CLOSE = {
  /** The server is stopping: reconnect (with backoff) from the last seq. */
  GOING_AWAY: 1001,
  INTERNAL: 1011,
  /** Too many connections on this server: try again later. */
  TRY_AGAIN: 1013,
  /** A bad query (since, type): fix the request; reconnecting will not help. */
  BAD_REQUEST: 4400,
  /** Missing, unknown, expired or revoked token. */
  AUTH: 4401,
  /** The token holds no permission that lets it read events. */
  FORBIDDEN: 4403,
  /** The client read too slowly: reconnect from the last seq (the replay catches up). */
  SLOW_CONSUMER: 4429,
} as const;

export interface EventStreamOptions {
  /** Ping every connection this often; one without a pong by the next ping is cut. Default 30 s. */
  pingEveryMs?: number;
  /** How often the tail looks for new events while anyone listens. Default 250 ms. */
  pollEveryMs?: number;
  /** Unsent bytes a live connection may hold before it is dropped. Default 1 MiB. */
  maxBufferedBytes?: number;
  /** A replay page not written to the socket within this time drops the connection. Default 30 s. */
  stallMs?: number;
  /** Connections per server. Default 1000. */
  maxConnections?: number;
}

export interface EventStream {
  stats(): { connections: number; live: number; dropped: number; cursor: number };
  /** Close every connection with 1001 and stop. */
  close(): Promise<void>;
}

const PAGE = 200;

interface TypeFilter {
  exact: Set<string>;
  prefixes: string[];
}

interface Conn {
  ws: WebSocket;
  principal: Principal;
  header: string;
  types: TypeFilter | undefined;
  project: string | undefined;
  app: string | undefined;
  /** Every event up to here was considered (sent or filtered out). */
  cursor: number;
  live: boolean;
  alive: boolean;
}

const env = (name: string) => (process.env[name] ? Number(process.env[name]) : undefined);

export function attachEventStream(srv: ServerContext, http: Server, opts: EventStreamOptions = {}): EventStream {
  const pingEveryMs = opts.pingEveryMs ?? env('KK_EVENTS_PING_MS') ?? 30_000;
  const pollEveryMs = opts.pollEveryMs ?? env('KK_EVENTS_POLL_MS') ?? 250;
  const maxBuffered = opts.maxBufferedBytes ?? env('KK_EVENTS_MAX_BUFFER') ?? 1024 * 1024;
  const stallMs = opts.stallMs ?? env('KK_EVENTS_STALL_MS') ?? 30_000;
  const maxConnections = opts.maxConnections ?? 1000;
  const events = srv.control.events;
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: 4096,
    clientTracking: false,
    // Select kk.v1 when offered (a browser fails a handshake that selects none of its offers);
    // the token subprotocol is never echoed.
    handleProtocols: (offered) => (offered.has(EVENT_STREAM_PROTOCOL) ? EVENT_STREAM_PROTOCOL : false),
  });
  const conns = new Set<Conn>();
  const live = new Set<Conn>();
  let dropped = 0;
  let closing = false;

  // ---- the tail: reads new events once and offers them to every live connection ----
  let cursor = -1;
  let starting: Promise<void> | undefined;
  let polling: Promise<void> | undefined;
  let again = false;
  let pollTimer: NodeJS.Timeout | undefined;
  const startTail = () =>
    (starting ??= events.current().then((seq) => {
      cursor = seq;
      pollTimer = setInterval(() => void poll(), pollEveryMs);
      pollTimer.unref();
    }));
  const poll = (): Promise<void> => {
    if (polling) {
      again = true;
      return polling;
    }
    polling = (async () => {
      try {
        for (let i = 0; i < 50 && live.size > 0; i++) {
          again = false;
          const page = await events.since(cursor, PAGE);
          for (const e of page.items) for (const c of [...live]) offer(c, e);
          cursor = page.next_since;
          if (!page.more && !again) break;
        }
        // Nobody listening live: keep the cursor current so the next joiner replays the rest.
        if (live.size === 0) cursor = Math.max(cursor, await events.current());
      } catch (err) {
        srv.log.warn('event stream: reading new events failed', { err: String((err as Error)?.message ?? err) });
      } finally {
        polling = undefined;
      }
    })();
    return polling;
  };

  const matches = (c: Conn, e: StoredEvent) => {
    if (c.project && e.project !== c.project) return false;
    if (c.app && e.app !== c.app) return false;
    const s = c.principal.scope;
    if (s.kind !== 'global') {
      if (e.project !== s.project) return false;
      if (s.kind === 'app' && !(e.app && s.apps.includes(e.app))) return false;
    }
    if (c.types && !c.types.exact.has(e.type) && !c.types.prefixes.some((p) => e.type.startsWith(p))) return false;
    return true;
  };

  const send = (c: Conn, msg: unknown, cb?: (err?: Error) => void) => {
    if (c.ws.readyState !== WebSocket.OPEN) return cb?.(new Error('closed'));
    c.ws.send(JSON.stringify(msg), cb);
  };

  function offer(c: Conn, e: StoredEvent) {
    if (e.seq <= c.cursor || c.ws.readyState !== WebSocket.OPEN) return;
    c.cursor = e.seq;
    if (!matches(c, e)) return;
    if (c.ws.bufferedAmount > maxBuffered) return drop(c, `more than ${maxBuffered} bytes unsent`);
    send(c, { op: 'event', seq: e.seq, event: e });
  }

  function drop(c: Conn, why: string) {
    if (!conns.has(c)) return;
    dropped++;
    live.delete(c);
    srv.log.warn('event stream: slow consumer dropped', { token: c.principal.tokenId, cursor: c.cursor, why });
    closeConn(c, STREAM_CLOSE.SLOW_CONSUMER, `too slow (${why}); reconnect with since=${c.cursor}`);
  }

  function closeConn(c: Conn, code: number, reason: string) {
    conns.delete(c);
    live.delete(c);
    if (c.ws.readyState === WebSocket.OPEN || c.ws.readyState === WebSocket.CONNECTING) {
      c.ws.close(code, reason.slice(0, 120));
      // A close frame that cannot be written (the peer stopped reading) ends in a cut.
      setTimeout(() => c.ws.terminate(), 5_000).unref();
    }
  }

  /** Wait until `last` (the page's last message) reached the socket, or `stallMs` passes (then drop). */
  const flushed = (c: Conn, last: unknown) =>
    new Promise<boolean>((resolve) => {
      const t = setTimeout(() => {
        drop(c, `a replay page was not read within ${stallMs} ms`);
        resolve(false);
      }, stallMs);
      send(c, last, () => {
        clearTimeout(t);
        resolve(c.ws.readyState === WebSocket.OPEN);
      });
    });

  /** Send from the database up to `upTo` (the seq the hello named) and the tail's cursor, then join the tail. */
  async function replay(c: Conn, upTo: number) {
    const visible = c.principal.scope.kind === 'global' ? undefined : c.principal.scope.kind === 'project' ? { project: c.principal.scope.project } : { project: c.principal.scope.project, apps: c.principal.scope.apps };
    const filter = { ...(c.project ? { project: c.project } : {}), ...(c.app ? { app: c.app } : {}), ...(visible ? { visible } : {}), ...(c.types && c.types.exact.size === 1 && !c.types.prefixes.length ? { type: [...c.types.exact][0]! } : {}) };
    for (;;) {
      if (!conns.has(c)) return;
      // Caught up with the tail: join it in the same tick, so no event falls between the two.
      if (c.cursor >= cursor && c.cursor >= upTo) {
        c.live = true;
        live.add(c);
        send(c, { op: 'live', seq: c.cursor });
        return;
      }
      const page = await events.since(c.cursor, PAGE, filter);
      const out = page.items.filter((e) => e.seq > c.cursor && matches(c, e)).map((e) => ({ op: 'event', seq: e.seq, event: e }));
      for (const m of out.slice(0, -1)) send(c, m);
      c.cursor = Math.max(c.cursor, page.more ? page.items[page.items.length - 1]!.seq : page.next_since);
      if (out.length && !(await flushed(c, out[out.length - 1]))) return;
    }
  }

  async function open(ws: WebSocket, req: IncomingMessage) {
    const url = new URL(req.url ?? '/', 'http://x');
    const protoToken = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((s) => s.trim())
      .find((s) => s.startsWith(EVENT_STREAM_TOKEN_PREFIX));
    const header = protoToken ? `Bearer ${protoToken.slice(EVENT_STREAM_TOKEN_PREFIX.length)}` : String(req.headers.authorization ?? '');
    const refuse = (code: number, reason: string) => {
      ws.close(code, reason.slice(0, 120));
      setTimeout(() => ws.terminate(), 5_000).unref();
    };
    let principal: Principal;
    try {
      principal = await srv.tokens.authenticate(header || undefined);
    } catch (err) {
      if (isKkError(err, 'AUTH')) return refuse(STREAM_CLOSE.AUTH, `${(err as Error).message}: offer the subprotocol ${EVENT_STREAM_TOKEN_PREFIX}<token>`);
      srv.log.error('event stream: authentication failed', { err: String(err) });
      return refuse(STREAM_CLOSE.INTERNAL, 'internal error');
    }
    if (principal.permissions.size === 0) return refuse(STREAM_CLOSE.FORBIDDEN, `token ${principal.tokenId} holds no permission`);
    let since: number | undefined;
    let types: TypeFilter | undefined;
    try {
      const s = url.searchParams.get('since');
      if (s !== null && s !== '') {
        if (!/^\d{1,15}$/.test(s)) throw new KkError('CONFIG_INVALID', 'since must be a non-negative integer (an event seq)');
        since = Number(s);
      }
      const t = url.searchParams.getAll('type').flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
      if (t.length) {
        types = { exact: new Set(), prefixes: [] };
        for (const x of t) {
          if (!/^[a-z0-9_.]+(\.\*)?$|^\*$/.test(x)) throw new KkError('CONFIG_INVALID', `bad type ${JSON.stringify(x)}: use a type (task.failed) or a prefix (task.*)`);
          if (x === '*') types = undefined;
          else if (x.endsWith('.*')) types?.prefixes.push(x.slice(0, -1));
          else types?.exact.add(x);
          if (!types) break;
        }
      }
    } catch (err) {
      return refuse(STREAM_CLOSE.BAD_REQUEST, (err as Error).message);
    }
    if (closing) return refuse(STREAM_CLOSE.GOING_AWAY, 'server stopping');
    if (conns.size >= maxConnections) return refuse(STREAM_CLOSE.TRY_AGAIN, `this server has ${maxConnections} event streams open; try again later`);
    await startTail();
    const current = await events.current();
    const c: Conn = {
      ws,
      principal,
      header,
      types,
      project: url.searchParams.get('project') || undefined,
      app: url.searchParams.get('app') || undefined,
      cursor: Math.min(since ?? current, current),
      live: false,
      alive: true,
    };
    conns.add(c);
    ws.on('pong', () => (c.alive = true));
    ws.on('message', () => {}); // nothing is expected from the client; messages are ignored
    ws.on('error', () => {});
    ws.on('close', () => {
      conns.delete(c);
      live.delete(c);
    });
    send(c, { op: 'hello', protocol: EVENT_STREAM_PROTOCOL, seq: current, since: c.cursor, token: principal.tokenId });
    try {
      await replay(c, current);
    } catch (err) {
      srv.log.error('event stream: replay failed', { err: String((err as Error)?.message ?? err) });
      closeConn(c, STREAM_CLOSE.INTERNAL, 'reading events failed; reconnect');
    }
  }

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '/').split('?')[0];
    const reject = (status: number, text: string) => {
      socket.end(`HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
    };
    socket.on('error', () => {});
    if (path !== EVENT_STREAM_PATH) return reject(404, 'Not Found');
    if (closing) return reject(503, 'Service Unavailable');
    wss.handleUpgrade(req, socket, head, (ws) => {
      open(ws, req).catch((err) => {
        srv.log.error('event stream: connection failed', { err: String(err) });
        ws.terminate();
      });
    });
  };
  http.on('upgrade', onUpgrade);

  const unsubscribe = events.subscribe(() => {
    if (live.size) void poll();
  });

  const pinger = setInterval(() => {
    for (const c of [...conns]) {
      if (!c.alive) {
        conns.delete(c);
        live.delete(c);
        c.ws.terminate();
        continue;
      }
      c.alive = false;
      c.ws.ping();
      // A token revoked or expired since the connection opened ends it (revocation applies at once).
      srv.tokens.authenticate(c.header || undefined).catch((err: unknown) => {
        if (isKkError(err, 'AUTH')) closeConn(c, STREAM_CLOSE.AUTH, (err as Error).message);
      });
    }
  }, pingEveryMs);
  pinger.unref();

  return {
    stats: () => ({ connections: conns.size, live: live.size, dropped, cursor }),
    async close() {
      closing = true;
      unsubscribe();
      clearInterval(pinger);
      clearInterval(pollTimer);
      http.off('upgrade', onUpgrade);
      const all = [...conns];
      await Promise.all(
        all.map(
          (c) =>
            new Promise<void>((resolve) => {
              if (c.ws.readyState === WebSocket.CLOSED) return resolve();
              c.ws.once('close', () => resolve());
              closeConn(c, STREAM_CLOSE.GOING_AWAY, 'server stopping');
              setTimeout(() => {
                c.ws.terminate();
                resolve();
              }, 2_000).unref();
            }),
        ),
      );
      await polling;
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}
