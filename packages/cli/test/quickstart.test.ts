// Acceptance 3: the README's quick start, run line by line in a fresh directory, works as written.
// A line may say `# exits N`; every other line must exit 0.
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN_DIR, REPO_ROOT, type Sandbox, cleanEnv, run, sandbox } from './helpers.js';

interface Step {
  line: string;
  exit: number;
}

export function quickStartSteps(readme: string): Step[] {
  const section = /^## Quick start\n([\s\S]*?)(?=^## )/m.exec(readme)?.[1];
  if (!section) throw new Error('README.md has no "## Quick start" section');
  const blocks = [...section.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
  if (blocks.length !== 1) throw new Error(`the Quick start section must have exactly one \`\`\`sh block, found ${blocks.length}`);
  return blocks[0]!
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.trim().startsWith('#'))
    .map((line) => ({ line, exit: Number(/#\s*exits (\d+)/.exec(line)?.[1] ?? 0) }));
}

describe('README quick start', () => {
  let sb: Sandbox;
  let steps: Step[];
  beforeAll(async () => {
    sb = await sandbox();
    steps = quickStartSteps(await readFile(join(REPO_ROOT, 'README.md'), 'utf8'));
  });
  afterAll(() => sb.cleanup());

  it('runs line by line in an empty directory with kk on PATH as documented', async () => {
    await access(join(BIN_DIR, 'kk')).catch(() => {
      throw new Error(`${BIN_DIR}/kk is missing: npm ci should link the kk workspace's bin`);
    });
    const work = sb.path('work');
    const script = [
      'set -u',
      `export PATH=${JSON.stringify(BIN_DIR)}:"$PATH"`,
      `cd ${JSON.stringify(work)}`,
      ...steps.flatMap((s, i) => [
        `printf '$ %s\\n' ${shellQuote(s.line)}`,
        s.line,
        `rc=$?; if [ "$rc" -ne ${s.exit} ]; then echo "quick start step ${i + 1} exited $rc, expected ${s.exit}: "${shellQuote(s.line)} >&2; exit 90; fi`,
      ]),
    ].join('\n');
    await writeFile(sb.path('quickstart.sh'), `${script}\n`);
    await run('mkdir', [work], { cwd: sb.root });
    const r = await run('bash', [sb.path('quickstart.sh')], { cwd: work, env: cleanEnv({ KK_STATE_DIR: sb.stateDir }) });
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);

    // It did what it says: v2 was deployed (status), then rollback put v1 back exactly.
    expect(steps.some((s) => s.exit === 1 && /^kk diff /.test(s.line))).toBe(true);
    expect(r.stdout).toMatch(/deployed: demo\/web 2\.0\.0/);
    expect(await readFile(join(work, 'deploy/web/index.html'), 'utf8')).toBe('<h1>Hello</h1>\n');
    expect(await readFile(join(work, 'deploy/web/css/site.css'), 'utf8')).toBe('h1 { color: navy }\n');
    await expect(access(join(work, 'deploy/web/build.log'))).rejects.toThrow(/ENOENT/);
    expect(r.stdout).toMatch(/deploy\/web matches demo\/web 1\.0\.0/);
  });
});

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
