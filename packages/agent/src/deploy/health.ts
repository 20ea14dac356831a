// Health checks (seed deploy-16): HTTP (2xx/3xx), TCP (a connection) or a script (exit 0). One
// probe at once, then up to `retries` more `interval_ms` apart, all within `deadline_ms`, each
// probe limited to `timeout_ms`. Defaults: 3 retries, 10 s, 5 s per probe, 60 s.
import { request } from 'node:http';
import { connect } from 'node:net';
import { runScript } from './script.js';
import type { HealthCheckResult, HealthCheckSpec } from './types.js';

export const HEALTH_DEFAULTS = { retries: 3, interval_ms: 10_000, timeout_ms: 5_000, deadline_ms: 60_000 };

interface Probe {
  ok: boolean;
  status_code?: number;
  error?: string;
}

function httpProbe(host: string, port: number, path: string, timeoutMs: number): Promise<Probe> {
  return new Promise((resolve) => {
    const req = request({ host, port, path, method: 'GET', timeout: timeoutMs, headers: { 'user-agent': 'kk-agent health' } }, (res) => {
      res.resume();
      const s = res.statusCode ?? 0;
      resolve(s >= 200 && s < 400 ? { ok: true, status_code: s } : { ok: false, status_code: s, error: `HTTP ${s} from http://${host}:${port}${path}` });
    });
    req.once('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.once('error', (e) => resolve({ ok: false, error: `http://${host}:${port}${path}: ${e.message}` }));
    req.end();
  });
}

function tcpProbe(host: string, port: number, timeoutMs: number): Promise<Probe> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const timer = setTimeout(() => s.destroy(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve({ ok: true });
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      resolve({ ok: false, error: `tcp ${host}:${port}: ${e.message}` });
    });
  });
}

async function scriptProbe(script: string, timeoutMs: number, env?: Record<string, string>): Promise<Probe> {
  const r = await runScript(script, { timeoutMs, ...(env ? { env } : {}) });
  if (r.timedOut) return { ok: false, error: `the health script ran past ${timeoutMs} ms` };
  return r.code === 0 ? { ok: true } : { ok: false, error: `the health script exited with ${r.signal ?? r.code}${r.stderr.trim() ? `: ${r.stderr.trim().split('\n').pop()}` : ''}` };
}

export function checkHealthSpec(h: HealthCheckSpec): void {
  if (!['http', 'tcp', 'script'].includes(h.type)) throw new TypeError(`unknown health check type ${String(h.type)}`);
  if (h.type !== 'script' && !(Number.isInteger(h.port) && h.port! > 0 && h.port! < 65536)) throw new TypeError('an http or tcp health check needs a port');
  if (h.type === 'script' && !h.script) throw new TypeError('a script health check needs a script');
}

export async function healthCheck(h: HealthCheckSpec, opts: { signal?: AbortSignal; env?: Record<string, string>; onProbe?: (n: number, p: Probe) => void } = {}): Promise<HealthCheckResult> {
  const retries = Math.max(0, h.retries ?? HEALTH_DEFAULTS.retries);
  const interval = h.interval_ms ?? HEALTH_DEFAULTS.interval_ms;
  const per = h.timeout_ms ?? HEALTH_DEFAULTS.timeout_ms;
  const deadline = Date.now() + (h.deadline_ms ?? HEALTH_DEFAULTS.deadline_ms);
  const host = h.host ?? '127.0.0.1';
  let last: Probe = { ok: false, error: 'not probed' };
  let took = 0;
  let probes = 0;
  for (let n = 0; n <= retries; n++) {
    if (n > 0) {
      if (Date.now() + interval >= deadline) break;
      await new Promise((r) => setTimeout(r, interval));
    }
    if (opts.signal?.aborted) break;
    const limit = Math.max(1, Math.min(per, deadline - Date.now()));
    const t0 = performance.now();
    last = h.type === 'http' ? await httpProbe(host, h.port!, h.path ?? '/', limit) : h.type === 'tcp' ? await tcpProbe(host, h.port!, limit) : await scriptProbe(h.script!, limit, opts.env);
    took = Math.round(performance.now() - t0);
    probes++;
    opts.onProbe?.(n, last);
    if (last.ok) break;
  }
  const r: HealthCheckResult = { success: last.ok, check_type: h.type, response_time: took, retry_count: Math.max(0, probes - 1), timestamp: new Date().toISOString() };
  if (last.status_code !== undefined) r.status_code = last.status_code;
  if (!last.ok && last.error) r.error = last.error;
  return r;
}
