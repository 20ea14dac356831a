// Store key rules every driver enforces at its boundary (the driver contract, core/driver.ts):
// `/`-separated segments, never empty, `.` or `..`, no backslash or NUL, and never starting
// with `.tmp-` (the file driver's temp files live beside the objects).

export const TEMP_PREFIX = '.tmp-';

/** Returns `key` if it is a safe relative `/`-separated path; throws a TypeError otherwise. */
export function checkKey(key: string): string {
  if (typeof key !== 'string' || key === '') throw new TypeError('store key must be a non-empty string');
  for (const segment of key.split('/')) checkSegment(key, segment);
  return key;
}

/** A prefix is a key with an optional trailing `/`, a partial last segment, or empty. */
export function checkPrefix(prefix: string): string {
  if (typeof prefix !== 'string') throw new TypeError('store prefix must be a string');
  const segments = prefix.split('/');
  const last = segments.pop()!;
  for (const segment of segments) checkSegment(prefix, segment);
  if (/[\\\0]/.test(last)) throw new TypeError(`unsafe store prefix "${prefix}"`);
  return prefix;
}

function checkSegment(key: string, segment: string): void {
  if (segment === '' || segment === '.' || segment === '..' || /[\\\0]/.test(segment) || segment.startsWith(TEMP_PREFIX)) {
    throw new TypeError(`unsafe store key "${key}": segments must be non-empty, not "." or "..", without "\\" or NUL, and not start with "${TEMP_PREFIX}"`);
  }
}
