// Structured JSON logs: one object per line with time, level and message, to stdout by default.
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export type LogSink = (entry: Record<string, unknown>) => void;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** A logger writing JSON lines to `sink` (default: stdout); `false` discards everything. */
export function createLogger(sink: LogSink | false | undefined, level: LogLevel = 'info'): Logger {
  const out: LogSink | undefined =
    sink === false ? undefined : (sink ?? ((e) => process.stdout.write(`${JSON.stringify(e)}\n`)));
  const at =
    (lvl: LogLevel) =>
    (msg: string, fields: Record<string, unknown> = {}) => {
      if (!out || RANK[lvl] < RANK[level]) return;
      const entry: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, msg };
      for (const [k, v] of Object.entries(fields)) if (v !== undefined) entry[k] = v;
      out(entry);
    };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
