// Renders core ProgressEvents on stderr: a live cli-progress bar on a terminal, a plain line every
// few seconds otherwise (CI logs), nothing with --quiet or --json.
import type { Phase, ProgressCallback, ProgressEvent } from '@kk/core';
import cliProgress from 'cli-progress';
import { formatBytes, formatDuration } from './format.js';

export type ProgressMode = 'bar' | 'lines' | 'off';

export interface ProgressDisplay {
  readonly onProgress: ProgressCallback;
  /** Finish the current line; call before printing anything else and before exiting. */
  stop(): void;
}

const LABEL: Record<Phase, string> = {
  scan: 'scanning',
  hash: 'hashing',
  upload: 'uploading',
  plan: 'planning',
  fetch: 'fetching',
  commit: 'applying',
  retention: 'retention',
  gc: 'collecting',
};

/** Time between two plain progress lines when stderr is not a terminal. */
export const LINE_INTERVAL_MS = 5000;

interface PhaseClock {
  phase: Phase;
  started: number;
}

/** "hashing  512 MiB / 1.00 GiB  50%  210 MiB/s  ETA 2.4s" (or item counts when no bytes move). */
export function describeProgress(e: ProgressEvent, elapsedMs: number): string {
  const label = LABEL[e.phase].padEnd(10);
  if (e.bytesTotal > 0) {
    const pct = Math.min(100, Math.floor((e.bytesDone / e.bytesTotal) * 100));
    const rate = elapsedMs > 0 ? (e.bytesDone / elapsedMs) * 1000 : 0;
    const eta = rate > 0 ? formatDuration((e.bytesTotal - e.bytesDone) / rate) : '?';
    return `${label} ${formatBytes(e.bytesDone)} / ${formatBytes(e.bytesTotal)}  ${pct}%  ${formatBytes(rate)}/s  ETA ${eta}`;
  }
  if (e.total > 0) return `${label} ${e.done} / ${e.total}`;
  return label.trimEnd();
}

export function createProgress(mode: ProgressMode, stream: NodeJS.WriteStream = process.stderr): ProgressDisplay {
  if (mode === 'bar') return barProgress(stream);
  if (mode === 'lines') return lineProgress(stream);
  return { onProgress: () => {}, stop: () => {} };
}

/** Plain lines: while work runs, one line every LINE_INTERVAL_MS; never an escape code. */
export function lineProgress(stream: Pick<NodeJS.WritableStream, 'write'>, intervalMs = LINE_INTERVAL_MS): ProgressDisplay {
  let clock: PhaseClock | undefined;
  let last: ProgressEvent | undefined;
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    if (last && clock) stream.write(`kk: ${describeProgress(last, Date.now() - clock.started)}\n`);
  };
  return {
    onProgress(e) {
      if (clock?.phase !== e.phase) clock = { phase: e.phase, started: Date.now() };
      last = e;
      if (!timer) {
        timer = setInterval(tick, intervalMs);
        timer.unref();
      }
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      clock = undefined;
      last = undefined;
    },
  };
}

/** A live bar per phase; a finished phase stays on screen as one line. */
function barProgress(stream: NodeJS.WriteStream): ProgressDisplay {
  let clock: PhaseClock | undefined;
  let bar: cliProgress.SingleBar | undefined;
  let last: ProgressEvent | undefined;
  const format = (options: cliProgress.Options, params: cliProgress.Params) => {
    if (!last || !clock) return '';
    const e = last;
    const elapsed = (params.stopTime ?? Date.now()) - clock.started;
    const hasTotal = e.bytesTotal > 0 || e.total > 0;
    const barText = hasTotal ? `${cliProgress.Format.BarFormat(params.progress, options)} ` : '';
    return `${barText}${describeProgress(e, elapsed)}`;
  };
  const finish = () => {
    bar?.stop();
    bar = undefined;
  };
  return {
    onProgress(e) {
      const value = e.bytesTotal > 0 ? e.bytesDone : e.done;
      const total = e.bytesTotal > 0 ? e.bytesTotal : Math.max(e.total, 1);
      if (clock?.phase !== e.phase || !bar) {
        // The finished phase keeps its last figures on its own line.
        finish();
        last = e;
        clock = { phase: e.phase, started: Date.now() };
        bar = new cliProgress.SingleBar({
          stream,
          format,
          barsize: 24,
          fps: 8,
          // Never leave the terminal changed (hidden cursor, no line wrap) if kk is killed mid-bar.
          hideCursor: false,
          linewrap: true,
          clearOnComplete: false,
          stopOnComplete: false,
          barCompleteChar: '█',
          barIncompleteChar: '░',
        });
        bar.start(total, value);
        return;
      }
      last = e;
      bar.setTotal(total);
      bar.update(value);
    },
    stop: finish,
  };
}
