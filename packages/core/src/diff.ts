// Differences between two versions' manifests (no file system involved).
import type { FileEntry, Manifest } from './manifest.js';

export interface VersionDiff {
  from: string;
  to: string;
  added: string[];
  changed: string[];
  deleted: string[];
  /** Same content, different mode. */
  modeChanged: string[];
  /** Bytes of added and changed files in `to`. */
  bytesChanged: number;
}

export function diffManifests(a: Manifest, b: Manifest): VersionDiff {
  const before = new Map<string, FileEntry>(a.files.map((f) => [f.path, f]));
  const d: VersionDiff = { from: a.version, to: b.version, added: [], changed: [], deleted: [], modeChanged: [], bytesChanged: 0 };
  for (const f of b.files) {
    const o = before.get(f.path);
    before.delete(f.path);
    if (!o) {
      d.added.push(f.path);
      d.bytesChanged += f.size;
    } else if (o.sha256 !== f.sha256) {
      d.changed.push(f.path);
      d.bytesChanged += f.size;
    } else if (o.mode !== f.mode) d.modeChanged.push(f.path);
  }
  d.deleted = [...before.keys()];
  return d;
}
