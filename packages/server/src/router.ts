// A small router: `METHOD /a/{param}/b/{rest+}` patterns, every parameter decoded and checked
// against its kind's name rule before a handler runs (400 otherwise, nothing read or written).
import { KkError, assertAppName, assertChannelName, assertProjectName, isDigest } from '@kk/core';
import { badRequest } from './http.js';

/** Checks a decoded path parameter; throws KkError INVALID_NAME / HttpError 400. */
export type ParamCheck = (value: string) => void;

const VERSION_SPEC = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;
const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The rule for each parameter name used in a route pattern. */
export const PARAM_CHECKS: Record<string, ParamCheck> = {
  project: assertProjectName,
  app: assertAppName,
  channel: assertChannelName,
  // A version in a path may also be `latest` or a channel name on reads: the version alphabet.
  version: (v) => {
    if (!VERSION_SPEC.test(v) || v.includes('..')) {
      throw new KkError('INVALID_NAME', `invalid version name ${JSON.stringify(v)}`, { details: { kind: 'version', name: v } });
    }
  },
  // The seed's `{hash}`: a version spec as above, or a manifest digest.
  hash: (v) => {
    if (!isDigest(v)) PARAM_CHECKS.version!(v);
  },
  digest: (v) => {
    if (!isDigest(v)) throw new KkError('INVALID_NAME', `invalid digest ${JSON.stringify(v)}: expected sha256:<64 hex>`);
  },
  id: (v) => {
    if (!ID.test(v) || v.includes('..')) throw badRequest(`invalid id ${JSON.stringify(v)}`);
  },
  delivery: (v) => PARAM_CHECKS.id!(v),
  // A store key: checked by the handler's key rules (it may contain `/`).
  key: (v) => {
    if (v === '' || v.split('/').some((s) => s === '' || s === '.' || s === '..' || /[\\\0]/.test(s))) {
      throw badRequest(`invalid store key ${JSON.stringify(v)}`);
    }
  },
};

interface Segment {
  literal?: string;
  param?: string;
  rest?: boolean;
}

export interface Route<H> {
  method: string;
  /** The pattern, used as the metrics and log label. */
  pattern: string;
  segments: Segment[];
  handler: H;
}

export interface Match<H> {
  route: Route<H>;
  params: Record<string, string>;
}

export class Router<H> {
  private readonly table: Route<H>[] = [];

  /** Every route, in registration order (tests walk them). */
  get routes(): readonly Route<H>[] {
    return this.table;
  }

  add(method: string, pattern: string, handler: H): this {
    const segments = pattern
      .split('/')
      .filter(Boolean)
      .map((s): Segment => {
        const m = /^\{(\w+)(\+)?\}$/.exec(s);
        if (!m) return { literal: s };
        if (!PARAM_CHECKS[m[1]!]) throw new TypeError(`no check for route parameter {${m[1]}}`);
        return { param: m[1]!, rest: !!m[2] };
      });
    this.table.push({ method, pattern, segments, handler });
    return this;
  }

  /**
   * Finds the route for a raw path (still percent-encoded). `undefined` means no pattern
   * matches; `{ allowed }` means the path exists for other methods (405).
   */
  match(method: string, rawPath: string): Match<H> | { allowed: string[] } | undefined {
    const parts = rawPath.split('/').slice(1);
    if (parts.length > 1 && parts[parts.length - 1] === '') parts.pop();
    const allowed = new Set<string>();
    for (const route of this.table) {
      const params = bind(route.segments, parts);
      if (!params) continue;
      if (route.method === method || (method === 'HEAD' && route.method === 'GET')) {
        for (const [name, value] of Object.entries(params)) PARAM_CHECKS[name]!(value);
        return { route, params };
      }
      allowed.add(route.method);
    }
    return allowed.size ? { allowed: [...allowed] } : undefined;
  }
}

function bind(segments: Segment[], parts: string[]): Record<string, string> | undefined {
  const params: Record<string, string> = {};
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    if (seg.rest) {
      if (i >= parts.length) return undefined;
      params[seg.param!] = parts.slice(i).map(decode).join('/');
      return params;
    }
    if (i >= parts.length) return undefined;
    if (seg.literal !== undefined) {
      if (parts[i] !== seg.literal) return undefined;
    } else {
      params[seg.param!] = decode(parts[i]!);
    }
  }
  return segments.length === parts.length ? params : undefined;
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw badRequest(`malformed percent-encoding in ${JSON.stringify(s)}`);
  }
}
