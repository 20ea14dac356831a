// Acceptance 3: the README's quick start, run line by line in a fresh directory, works as written.
// A line may say `# exits N`; every other line must exit 0.
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN_DIR, REPO_ROOT, type Sandbox, cleanEnv, run, sandbox } from './helpers.js';
// @ts-expect-error: a plain .mjs script, shared with `npm run demo`
import { quickStartScript, quickStartSteps } from '../../../scripts/quickstart.mjs';

interface Step {
  line: string;
  exit: number;
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
    await writeFile(sb.path('quickstart.sh'), quickStartScript(steps, BIN_DIR, work));
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
