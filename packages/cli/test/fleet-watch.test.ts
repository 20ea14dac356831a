// `kk watch` as a real process against a real server: replay from --since, live events, a server
// restart on the same port survived by reconnecting from the last seq (nothing missed or printed
// twice), --type filters, --count, SIGINT ends with exit 0; a refused token is one line, exit 1.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startServer, type RunningServer } from '@kk/server';
import { KK_BIN, cleanEnv, type Sandbox, sandbox } from './helpers.js';

let sb: Sandbox;
let srv: RunningServer;
const admin = `admin-${randomBytes(8).toString('hex')}`;
const start = (listen = '127.0.0.1:0') => startServer({ store: sb.path('store'), listen, adminToken: admin, log: false, config: { hasherThreads: 1 } });

beforeAll(async () => {
  sb = await sandbox();
  srv = await start();
}, 60_000);
afterAll(async () => {
  await srv?.close();
  await sb?.cleanup();
});

const emit = (type: string, project = 'shop') => srv.server.control.events.emit({ type, project, app: 'web', actor: { token: 'test' }, details: { n: type } });

function watch(args: string[]): { child: ChildProcess; lines: string[]; stderr: () => string; exit: Promise<number> } {
  const child = spawn(process.execPath, [KK_BIN, 'watch', '--server', srv.url, '--token', admin, ...args], { env: cleanEnv({ KK_STATE_DIR: sb.stateDir }), stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let buf = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => {
    buf += b.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    lines.push(...parts);
  });
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exit = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 128)));
  return { child, lines, stderr: () => err, exit };
}

async function until(what: string, fn: () => boolean, ms = 30_000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

it('replays, follows live, survives a server restart without a gap or a duplicate, and stops on SIGINT', async () => {
  const since = await srv.server.control.events.current();
  await emit('task.failed');
  await emit('node.online');
  const w = watch(['--since', String(since), '--json']);
  const events = () => w.lines.filter((l) => l.startsWith('{"')).map((l) => JSON.parse(l));
  await until('the replay', () => events().length === 2);
  await emit('task.succeeded');
  await until('a live event', () => events().length === 3);
  // Restart on the same port; events appended while it is down are replayed on reconnect.
  const port = new URL(srv.url).port;
  await srv.close();
  srv = await start(`127.0.0.1:${port}`);
  await emit('target.paused');
  await emit('target.resumed');
  await until('the events after the restart', () => events().length === 5);
  expect(events().map((e) => e.type)).toEqual(['task.failed', 'node.online', 'task.succeeded', 'target.paused', 'target.resumed']);
  expect(events().map((e) => e.seq)).toEqual(Array.from({ length: 5 }, (_, i) => since + 1 + i));
  expect(w.stderr()).toMatch(/event stream closed \(1001: server stopping\); reconnecting in .* from seq/);
  w.child.kill('SIGINT');
  expect(await w.exit).toBe(0);
  // After the event lines (one JSON object each) comes the summary document.
  const summary = JSON.parse(w.lines.slice(w.lines.lastIndexOf('{')).join('\n'));
  expect(summary).toMatchObject({ events: 5, last_seq: since + 5, stopped: 'SIGINT' });
  expect(summary.reconnects).toBeGreaterThanOrEqual(1);
}, 90_000);

it('--type with a prefix and --count print lines for a person and exit by themselves; a bad token fails at once', async () => {
  const since = await srv.server.control.events.current();
  const w = watch(['--since', String(since), '--type', 'sync.*', '--count', '2']);
  await emit('task.failed');
  await emit('sync.degraded');
  await emit('node.offline');
  await emit('sync.recovered');
  expect(await w.exit).toBe(0);
  expect(w.lines[0]).toMatch(new RegExp(`^#${since + 2}  \\S+  sync\\.degraded  shop/web  n=sync\\.degraded  by test$`));
  expect(w.lines[1]).toMatch(/ sync\.recovered /);
  expect(w.lines[2]).toMatch(/^kk: watched 2 event\(s\)/);

  const bad = spawn(process.execPath, [KK_BIN, 'watch', '--server', srv.url, '--token', 'kk_00000000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  bad.stderr.on('data', (b: Buffer) => (err += b.toString()));
  expect(await new Promise((resolve) => bad.on('close', resolve))).toBe(1);
  expect(err).toMatch(/^kk: the server refused the token: the token is not valid|^kk: the server refused the token/);
}, 60_000);
