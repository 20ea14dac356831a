// Acceptance 1: `kk --help` lists every command; each command's --help shows its flags and an example.
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANSI, type Sandbox, sandbox } from './helpers.js';

const COMMANDS = ['apps', 'diff', 'gc', 'manifest', 'projects', 'pull', 'push', 'rollback', 'status', 'verify', 'versions'];

/** Flags each command must show (beyond --json, --quiet, --verbose, which all show). */
const FLAGS: Record<string, string[]> = {
  push: ['--project', '--app', '--version', '--path', '--config', '--store', '--concurrency', '--state-dir'],
  pull: ['--project', '--app', '--version', '--path', '--config', '--store', '--concurrency', '--state-dir', '--dry-run', '--max-delete'],
  diff: ['--project', '--app', '--version', '--path', '--from', '--to', '--store'],
  rollback: ['--path', '--to', '--config', '--dry-run', '--state-dir'],
  versions: ['--project', '--app', '--store', '--config'],
  projects: ['--store'],
  apps: ['--project', '--store'],
  verify: ['--path', '--state-dir', '--version'],
  manifest: ['--format', '--project', '--app', '--version', '--path'],
  gc: ['--dry-run', '--keep', '--grace', '--store'],
  status: ['--path', '--state-dir'],
};

describe.concurrent('help', () => {
  let sb: Sandbox;
  beforeAll(async () => {
    sb = await sandbox();
  });
  afterAll(() => sb.cleanup());

  it('every built command is one this test knows', async () => {
    const dir = fileURLToPath(new URL('../dist/commands/', import.meta.url));
    const built = (await readdir(dir)).filter((f) => f.endsWith('.js')).map((f) => f.slice(0, -3));
    expect(built.sort()).toEqual(expect.arrayContaining(COMMANDS));
  });

  it('kk --help lists every command', async () => {
    const r = await sb.kk(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(ANSI);
    for (const c of COMMANDS) expect(r.stdout).toMatch(new RegExp(`^ {2}${c} +\\S`, 'm'));
  });

  it.each(COMMANDS)('kk %s --help shows its flags and an example', async (command) => {
    const r = await sb.kk([command, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^FLAGS$/m);
    expect(r.stdout).toMatch(/^EXAMPLES$/m);
    expect(r.stdout).toMatch(new RegExp(`^ {2}\\$ kk ${command} `, 'm'));
    for (const flag of [...FLAGS[command]!, '--json', '--quiet', '--verbose']) expect(r.stdout).toContain(`${flag}`);
  });

  it('an unknown command is a usage error (exit 2) that names the commands', async () => {
    const r = await sb.kk(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^kk: unknown command "frobnicate"/);
    expect(r.stderr).toContain('push');
  });
});
