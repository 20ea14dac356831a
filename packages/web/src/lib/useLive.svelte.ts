// Refresh a view when events about it arrive: `refreshOn((e) => e.project === p, reload)`.
// Bursts (a promote emits several events) are coalesced into one reload.
import { type KkEvent, onEvent } from './live.svelte.js';

export function refreshOn(match: (e: KkEvent) => boolean, reload: () => void, delayMs = 120): void {
  $effect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const off = onEvent((e) => {
      if (!match(e)) return;
      clearTimeout(timer);
      timer = setTimeout(reload, delayMs);
    });
    return () => {
      clearTimeout(timer);
      off();
    };
  });
}
