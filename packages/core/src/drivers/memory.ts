// In-memory driver for core unit tests and embedders' tests. It passes the conformance suite,
// so behaviour proven against it carries over to the real drivers.
import type { ByteRange, DriverCapabilities, ObjectInfo, PruneDriver } from '../driver.js';

export interface MemoryDriverOptions {
  /** Shared map, so two drivers can see one "backend". Default: a new map. */
  objects?: Map<string, { data: Buffer; mtime: number }>;
}

export function createMemoryDriver(opts: MemoryDriverOptions = {}) {
  const objects = opts.objects ?? new Map<string, { data: Buffer; mtime: number }>();
  const capabilities: DriverCapabilities = {
    rangeReads: true,
    atomicCreate: true,
    listing: true,
    deletion: true,
    batchExists: true,
  };
  return {
    name: 'memory',
    capabilities,
    async get(key: string, range?: ByteRange) {
      const o = objects.get(key);
      if (!o) return undefined;
      const data = range ? o.data.subarray(range.start, range.end + 1) : o.data;
      return Buffer.from(data);
    },
    async stat(key: string) {
      const o = objects.get(key);
      return o ? { key, size: o.data.length, mtime: o.mtime } : undefined;
    },
    async hasMany(keys: readonly string[]) {
      return keys.map((k) => objects.has(k));
    },
    async *list(prefix: string): AsyncIterable<ObjectInfo> {
      for (const [key, o] of [...objects]) if (key.startsWith(prefix)) yield { key, size: o.data.length, mtime: o.mtime };
    },
    async listChildren(prefix: string) {
      const names = new Set<string>();
      for (const key of objects.keys()) if (key.startsWith(prefix)) names.add(key.slice(prefix.length).split('/')[0]!);
      return [...names].sort();
    },
    async put(key: string, data: Uint8Array) {
      objects.set(key, { data: Buffer.from(data), mtime: Date.now() });
    },
    async putIfAbsent(key: string, data: Uint8Array) {
      if (objects.has(key)) return false;
      objects.set(key, { data: Buffer.from(data), mtime: Date.now() });
      return true;
    },
    async delete(key: string) {
      objects.delete(key);
    },
    async close() {},
  } satisfies PruneDriver;
}
