// The agents' long-poll (DESIGN 13: outbound only, works behind NAT), shared by sync tasks and
// deploys: try now, then each time the route wakes its waiters (new work) or a second passes,
// until the caller's wait_ms (at most 60 s); 204 when nothing came. A server that is stopping
// answers "nothing now" at once; the agent asks again later.
import type { Call } from './context.js';

export type Waiters = Set<() => void> & { closing?: boolean };

const MAX_WAIT_MS = 60_000;

export function newWaiters(): { waiters: Waiters; wakeAll(): void } {
  const waiters = new Set<() => void>() as Waiters;
  return { waiters, wakeAll: () => [...waiters].forEach((w) => w()) };
}

/**
 * `attempt(gone)` claims and answers, returning true once it has answered (or once the caller
 * went away after a claim: the claim lapses and is handed out again).
 */
export async function longPoll(c: Call, waiters: Waiters, attempt: (gone: () => boolean) => Promise<boolean>): Promise<void> {
  const waitMs = Math.min(MAX_WAIT_MS, Math.max(0, Number(c.query.get('wait_ms') ?? 25_000) || 0));
  const end = Date.now() + waitMs;
  let gone = false;
  c.req.once('close', () => (gone = true));
  c.res.once('close', () => (gone = true));
  for (let i = 0; i < 10_000; i++) {
    if (await attempt(() => gone)) return;
    const left = end - Date.now();
    if (left <= 0 || gone || waiters.closing) break;
    await new Promise<void>((resolve) => {
      const t = setTimeout(fin, Math.min(1_000, left));
      waiters.add(fin);
      function fin() {
        clearTimeout(t);
        waiters.delete(fin);
        resolve();
      }
    });
  }
  if (!gone) {
    c.res.writeHead(204);
    c.res.end();
  }
}
