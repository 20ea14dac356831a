import { describe, expect, it } from 'vitest';
import {
  KkError,
  MANIFEST_FORMAT,
  canonicalManifestJson,
  chunkingFor,
  decodeManifest,
  encodeManifest,
  renderMetaYaml,
  renderSha256sum,
  sameContent,
  type Manifest,
} from '@kk/core';

const sha = (c: string) => `sha256:${c.repeat(64)}` as const;

function manifest(files: Manifest['files'], dirs: Manifest['dirs'] = []): Manifest {
  return {
    format: MANIFEST_FORMAT,
    project: 'p',
    app: 'a',
    version: '1.0.0',
    created: '2025-01-01T00:00:00.000Z',
    builder: 'ci',
    git_commit: 'abc',
    meta: {},
    chunking: chunkingFor(),
    dirs,
    files,
  };
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as KkError).code;
  }
  return 'none';
}

describe('manifest', () => {
  it('has one canonical JSON form: keys sorted, files sorted by UTF-8 bytes, no whitespace', () => {
    const m = manifest([
      { path: 'z', size: 1, mode: 0o644, mtime: 1, sha256: sha('a') },
      { path: 'Ä', size: 1, mode: 0o644, mtime: 1, sha256: sha('b') },
      { path: 'B', size: 1, mode: 0o644, mtime: 1, sha256: sha('c') },
    ]);
    const json = canonicalManifestJson(m);
    expect(json).not.toMatch(/\s/);
    expect(JSON.parse(json).files.map((f: { path: string }) => f.path)).toEqual(['B', 'z', 'Ä']);
    expect(json.indexOf('"app"')).toBeLessThan(json.indexOf('"builder"'));
    const shuffled = { ...m, files: [...m.files].reverse() };
    expect(encodeManifest(shuffled).digest).toBe(encodeManifest(m).digest);
    const { bytes, digest } = encodeManifest(m);
    expect(decodeManifest(bytes, digest).files).toHaveLength(3);
  });

  it.each(['../x', '/etc/x', 'a//b', 'a\u0000b', 'a/./b', 'a\\b', '', 'x/..'])('refuses path %j with UNSAFE_PATH', (path) => {
    const m = manifest([{ path, size: 1, mode: 0o644, mtime: 1, sha256: sha('a') }]);
    expect(codeOf(() => decodeManifest(Buffer.from(JSON.stringify(m))))).toBe('UNSAFE_PATH');
  });

  it('refuses setuid bits, duplicate paths, file/dir clashes, bad chunk sums and digest mismatch', () => {
    const f = { path: 'a', size: 1, mode: 0o644, mtime: 1, sha256: sha('a') };
    const bad = [
      manifest([{ ...f, mode: 0o4755 }]),
      manifest([f, f]),
      manifest([f, { ...f, path: 'a/b' }]),
      manifest([{ ...f, size: 10, chunks: [[sha('b'), 4], [sha('c'), 5]] }]),
      { ...manifest([f]), format: 'other' },
    ];
    for (const m of bad) expect(codeOf(() => decodeManifest(Buffer.from(JSON.stringify(m))))).toBe('MANIFEST_INVALID');
    const { bytes } = encodeManifest(manifest([f]));
    expect(codeOf(() => decodeManifest(bytes, sha('0')))).toBe('CHUNK_CORRUPT');
  });

  it('renders sha256sum lines and the seed meta.yaml', () => {
    const m = manifest([{ path: 'bin/app', size: 3, mode: 0o755, mtime: 1, sha256: sha('e') }], [{ path: 'bin', mode: 0o755 }]);
    expect(renderSha256sum(m)).toBe(`${'e'.repeat(64)}  bin/app\n`);
    const y = renderMetaYaml(m);
    expect(y).toContain('project: p');
    expect(y).toContain('build_time: 2025-01-01T00:00:00.000Z');
    expect(y).toContain(`sha256: ${'e'.repeat(64)}`);
    expect(y).toContain('size: 3');
  });

  it('compares trees ignoring who built them and when', () => {
    const f = { path: 'a', size: 1, mode: 0o644, mtime: 1, sha256: sha('a') };
    expect(sameContent(manifest([f]), { ...manifest([f]), created: 'later', builder: 'x' })).toBe(true);
    expect(sameContent(manifest([f]), manifest([{ ...f, mode: 0o600 }]))).toBe(false);
  });
});
