// Tar uploads through the store (deploy/upload.ts): fixed 1 MiB chunks plus a list chunk; a second
// upload sends only what the store lacks; the node's copy is checked chunk by chunk and whole.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store, chunkKey, createMemoryDriver, isKkError, type Digest } from '@kk/core';
import { afterAll, expect, it } from 'vitest';
import { deploy } from '../src/index.js';

let dir: string;
afterAll(() => rm(dir, { recursive: true, force: true }));

it('only missing chunks are sent again; the fetched file is byte-exact; a damaged chunk or a wrong sha256 is refused', async () => {
  dir = await mkdtemp(join(tmpdir(), 'kk-upload-'));
  const driver = createMemoryDriver();
  const store = await Store.open(driver, { create: true });
  const data = randomBytes(3.5 * 1024 * 1024);
  const file = join(dir, 'app.tar.gz');
  await writeFile(file, data);
  const sha = createHash('sha256').update(data).digest('hex');

  const one = await deploy.uploadFile(store, file);
  expect(one).toMatchObject({ sha256: sha, size: data.length, chunks: 4, sent: 4, bytes_sent: data.length });
  expect(await deploy.uploadFile(store, file)).toMatchObject({ upload: one.upload, sent: 0, bytes_sent: 0 });
  const list = await deploy.readUploadList(store, one.upload);
  expect(list).toMatchObject({ format: 'kk-upload/1', name: 'app.tar.gz', size: data.length, sha256: sha, chunk_size: 1024 * 1024 });
  // An upload cut short: the store lacks one chunk; only that one goes.
  await driver.delete(chunkKey(list.chunks[2]!));
  expect(await deploy.uploadFile(store, file)).toMatchObject({ sent: 1, bytes_sent: 1024 * 1024 });

  const out = join(dir, 'fetched.tar.gz');
  const progress: number[] = [];
  await deploy.fetchUpload(store, one.upload, out, { expectSha256: sha, onProgress: (done) => progress.push(done) });
  expect((await readFile(out)).equals(data)).toBe(true);
  expect(progress.at(-1)).toBe(data.length);

  await expect(deploy.fetchUpload(store, one.upload, out, { expectSha256: '0'.repeat(64) })).rejects.toSatisfy((e) => isKkError(e, 'CHUNK_CORRUPT'));
  // A chunk object whose bytes no longer match its digest.
  const bad = Buffer.concat([Buffer.from([0]), randomBytes(1024 * 1024)]);
  await driver.put(chunkKey(list.chunks[1] as Digest), bad);
  await expect(deploy.fetchUpload(store, one.upload, out)).rejects.toSatisfy((e) => isKkError(e, 'CHUNK_CORRUPT') && /does not match its digest/.test((e as Error).message));
});
