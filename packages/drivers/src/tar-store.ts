// tar:///abs/path/file.tar: a kk store inside one uncompressed tar holding an OCI image layout,
// the same object graph as docker:// (oci-store.ts), so `skopeo copy --all oci-archive:file.tar:tag
// docker://...` works both ways. Export/import and air-gapped transfer in one file.
import { fileURLToPath } from 'node:url';
import { KkError } from '@kk/core';
import type { PruneDriver } from '@kk/core';
import { createOciStore } from './oci-store.js';
import { openTarArchive, type TarArchive, type TarArchiveOptions } from './tar-archive.js';

export type TarDriverOptions = TarArchiveOptions;

/** Opens the archive (reading and validating what is there; a missing file is created on the first write). */
export async function createTarDriver(opts: TarDriverOptions): Promise<PruneDriver & { readonly archive: TarArchive }> {
  const archive = await openTarArchive(opts);
  return Object.assign(createOciStore({ name: 'tar', backend: archive }), { archive });
}

/** `tar:///abs/path/file.tar` to driver options. */
export function tarDriverOptionsFromUrl(url: URL): TarDriverOptions {
  const bad = (why: string) => new KkError('CONFIG_INVALID', `bad tar store URL "${url.href}": ${why}`, { hint: 'use tar:///absolute/path/store.tar' });
  if (url.host) throw bad('it names a host; tar stores are local files (three slashes: tar:///path)');
  if (url.search) throw bad('it takes no parameters');
  let file: string;
  try {
    file = fileURLToPath(new URL(`file://${url.pathname}`));
  } catch (err) {
    throw bad((err as Error).message);
  }
  if (file.endsWith('/')) throw bad('it names a directory');
  return { file };
}
