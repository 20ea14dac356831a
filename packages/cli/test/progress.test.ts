// The progress renderings: figures in a line, plain periodic lines without a TTY, and silence.
import type { ProgressEvent } from '@kk/core';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createProgress, describeProgress, lineProgress } from '../src/progress.js';

const MiB = 1024 * 1024;
const ev = (e: Partial<ProgressEvent> & Pick<ProgressEvent, 'phase'>): ProgressEvent => ({ done: 0, total: 0, bytesDone: 0, bytesTotal: 0, ...e });

describe('describeProgress', () => {
  it('shows bytes done and total, percent, rate and ETA', () => {
    const line = describeProgress(ev({ phase: 'upload', bytesDone: 256 * MiB, bytesTotal: 1024 * MiB }), 2000);
    expect(line).toBe('uploading  256 MiB / 1.00 GiB  25%  128 MiB/s  ETA 6.0s');
  });
  it('falls back to item counts, then to the phase alone', () => {
    expect(describeProgress(ev({ phase: 'commit', done: 3, total: 10 }), 10)).toBe('applying   3 / 10');
    expect(describeProgress(ev({ phase: 'scan' }), 10)).toBe('scanning');
  });
  it('has no ETA before any byte moved', () => {
    expect(describeProgress(ev({ phase: 'hash', bytesTotal: MiB }), 500)).toMatch(/0 B\/s  ETA \?$/);
  });
});

describe('lineProgress (no TTY)', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('writes one plain line per interval while work runs, and nothing after stop', () => {
    const out: string[] = [];
    const p = lineProgress({ write: (s: string) => out.push(s) > 0 }, 5000);
    p.onProgress(ev({ phase: 'fetch', bytesTotal: 100 * MiB }));
    vi.advanceTimersByTime(4999);
    expect(out).toEqual([]);
    p.onProgress(ev({ phase: 'fetch', bytesDone: 50 * MiB, bytesTotal: 100 * MiB }));
    vi.advanceTimersByTime(1);
    expect(out).toHaveLength(1);
    expect(out[0]).toMatch(/^kk: fetching   50\.0 MiB \/ 100 MiB  50%  10\.0 MiB\/s  ETA 5\.0s\n$/);
    p.onProgress(ev({ phase: 'commit', done: 1, total: 2 }));
    vi.advanceTimersByTime(5000);
    expect(out[1]).toBe('kk: applying   1 / 2\n');
    p.stop();
    vi.advanceTimersByTime(60_000);
    expect(out).toHaveLength(2);
    expect(out.join('')).not.toMatch(/\u001b/);
  });

  it('is silent when off', () => {
    const writes: string[] = [];
    const stream = { write: (s: string) => writes.push(s) > 0, isTTY: true } as unknown as NodeJS.WriteStream;
    const p = createProgress('off', stream);
    p.onProgress(ev({ phase: 'upload', bytesDone: 1, bytesTotal: 2 }));
    vi.advanceTimersByTime(60_000);
    p.stop();
    expect(writes).toEqual([]);
  });
});
