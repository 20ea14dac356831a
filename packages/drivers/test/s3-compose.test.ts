// Issue 6, acceptance 5: .env.example documents exactly the variables docker-compose.yml uses,
// with the same defaults, and docker-compose accepts the file with it.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const compose = readFileSync(`${root}docker-compose.yml`, 'utf8');
const envExample = readFileSync(`${root}.env.example`, 'utf8');

/** Variable -> the defaults (`${NAME:-default}`) it is given in the compose file. */
function composeVariables(text: string): Map<string, Set<string | undefined>> {
  const vars = new Map<string, Set<string | undefined>>();
  const uncommented = text
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n');
  // `$$` is a literal dollar for the container's shell; `${A:-x}`, `${A-x}`, `${A:?msg}` and `$A` interpolate.
  for (const m of uncommented.matchAll(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*)|:?\?[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g)) {
    const name = m[1] ?? m[4];
    if (!name) continue;
    if (!vars.has(name)) vars.set(name, new Set());
    vars.get(name)!.add(m[2] ? m[3] : undefined);
  }
  return vars;
}

function envAssignments(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

describe('docker-compose.yml and .env.example', () => {
  const used = composeVariables(compose);
  const documented = envAssignments(envExample);

  it('the compose file uses variables (the parser finds them)', () => {
    expect(used.size).toBeGreaterThan(5);
    expect(used.has('MINIO_ROOT_PASSWORD')).toBe(true);
  });

  it('.env.example names every variable the compose file uses, and no other', () => {
    expect([...documented.keys()].sort()).toEqual([...used.keys()].sort());
  });

  it('.env.example gives each variable the default the compose file falls back to', () => {
    for (const [name, defaults] of used) {
      expect([...defaults], `${name} has one default in docker-compose.yml`).toHaveLength(1);
      expect(documented.get(name), name).toBe([...defaults][0]);
    }
  });

  it('every variable in .env.example has a comment above it', () => {
    const lines = envExample.split('\n');
    for (const name of documented.keys()) {
      let i = lines.findIndex((l) => l.startsWith(`${name}=`));
      while (i > 0 && /^[A-Za-z_][A-Za-z0-9_]*=/.test(lines[i - 1]!)) i--;
      expect(lines[i - 1], `comment above ${name}`).toMatch(/^# \S/);
    }
  });

  const dockerCompose = (process.env.PATH ?? '')
    .split(delimiter)
    .map((dir) => join(dir, 'docker-compose'))
    .find((file) => existsSync(file));
  if (!dockerCompose && process.env.CI) throw new Error('CI must validate docker-compose.yml: install docker-compose (see .ci/run)');
  it.skipIf(!dockerCompose)(`docker-compose config accepts the file with .env.example${dockerCompose ? '' : ' (skipped: docker-compose is not installed)'}`, async () => {
    const run = promisify(execFile);
    const { stdout } = await run(dockerCompose!, ['-f', 'docker-compose.yml', '--env-file', '.env.example', 'config'], { cwd: root });
    expect(stdout).toContain('s3://kk/store?endpoint=http://minio:9000&region=us-east-1&path_style=true');
    expect(stdout).toMatch(/condition: service_completed_successfully/);
  });
});
