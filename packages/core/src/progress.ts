// Progress events shared by every long operation; the CLI renders them, embedders may ignore them.

export type Phase = 'scan' | 'hash' | 'upload' | 'plan' | 'fetch' | 'commit' | 'retention' | 'gc';

export interface ProgressEvent {
  phase: Phase;
  /** Items (files or chunks) done and total, when known. */
  done: number;
  total: number;
  /** Bytes done and total, when the phase moves bytes. */
  bytesDone: number;
  bytesTotal: number;
}

export type ProgressCallback = (e: ProgressEvent) => void;

/** Throttle a phase's events to one per `everyMs` (the last one is always delivered). */
export function phaseReporter(cb: ProgressCallback | undefined, phase: Phase, total: number, bytesTotal: number, everyMs = 100) {
  let done = 0;
  let bytesDone = 0;
  let last = 0;
  const emit = (force: boolean) => {
    const now = Date.now();
    if (!cb || (!force && now - last < everyMs)) return;
    last = now;
    cb({ phase, done, total, bytesDone, bytesTotal });
  };
  emit(true);
  return {
    add(items: number, bytes: number) {
      done += items;
      bytesDone += bytes;
      emit(done === total);
    },
    /** Items done without moving bytes of this phase (e.g. copied locally, not fetched): they leave the byte total. */
    skip(items: number, bytes: number) {
      done += items;
      bytesTotal -= bytes;
      emit(done === total);
    },
    end() {
      emit(true);
    },
  };
}
