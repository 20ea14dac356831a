// The agent id (issue 10 item 4): `<hostname>/<random id kept in the state directory>`, the
// same on every call and for concurrent first callers, and a damaged file is replaced.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { agentId } from '@kk/core';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kk-agent-id-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('agentId', () => {
  it('is <hostname>/<id>, generated once and kept in the state directory', async () => {
    const state = join(dir, 'state');
    const first = await agentId(state);
    expect(first).toMatch(new RegExp(`^${hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/[0-9a-f]{16}$`));
    expect(await agentId(state)).toBe(first);
    expect((await readFile(join(state, 'agent-id'), 'utf8')).trim()).toBe(first.split('/')[1]);
    // Another state directory is another agent.
    expect(await agentId(join(dir, 'other'))).not.toBe(first);
  });

  it('concurrent first calls agree on one id', async () => {
    const ids = await Promise.all(Array.from({ length: 16 }, () => agentId(dir)));
    expect(new Set(ids).size).toBe(1);
  });

  it('replaces a damaged id file', async () => {
    await writeFile(join(dir, 'agent-id'), 'not an id');
    const id = await agentId(dir);
    expect(id).toMatch(/\/[0-9a-f]{16}$/);
    expect(await agentId(dir)).toBe(id);
  });
});
