// Views that keep filters in the query string follow it when the URL changes under them (a link,
// back/forward) while they stay on screen: `onNavigate(() => { filters = fromQuery(); load(); })`.
// The view's own setQuery uses replaceState, which fires no hashchange: no loop.
import { untrack } from 'svelte';
import { route } from './router.svelte.js';

export function onNavigate(fn: () => void): void {
  $effect(() => {
    // Not a dependency: re-registering between the router's listener and this one (microtasks
    // run between listeners) would drop this hashchange.
    const here = untrack(() => route.path.join('/'));
    const h = () => {
      if (route.path.join('/') === here) fn();
    };
    addEventListener('hashchange', h);
    return () => removeEventListener('hashchange', h);
  });
}
