// Hash routing: every view is a URL (`#/apps/P/A?tab=versions`), filters in its query string,
// so a view can be linked, reloaded and shared (the token never is: it lives in sessionStorage).

export interface Route {
  path: string[];
  query: URLSearchParams;
}

function parse(): Route {
  const h = location.hash.replace(/^#/, '') || '/';
  const i = h.indexOf('?');
  const p = i < 0 ? h : h.slice(0, i);
  return {
    path: p.split('/').filter(Boolean).map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return s;
      }
    }),
    query: new URLSearchParams(i < 0 ? '' : h.slice(i + 1)),
  };
}

export const route: Route = $state(parse());

addEventListener('hashchange', () => {
  const r = parse();
  route.path = r.path;
  route.query = r.query;
});

/** The href of a view: `href(['apps', p, a], { tab: 'versions' })`. */
export function href(path: string[], query: Record<string, string | undefined> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v) q.set(k, v);
  const s = q.toString();
  return `#/${path.map(encodeURIComponent).join('/')}${s ? `?${s}` : ''}`;
}

export function go(path: string[], query: Record<string, string | undefined> = {}): void {
  location.hash = href(path, query);
}

/** Change some query parameters of the current view (filters), keeping the path. */
export function setQuery(changes: Record<string, string | undefined>, replace = true): void {
  const q = new URLSearchParams(route.query);
  for (const [k, v] of Object.entries(changes)) {
    if (v) q.set(k, v);
    else q.delete(k);
  }
  const s = q.toString();
  const next = `#/${route.path.map(encodeURIComponent).join('/')}${s ? `?${s}` : ''}`;
  if (replace) {
    history.replaceState(null, '', next);
    route.query = q;
  } else location.hash = next;
}
