// `npm run demo`: runs the README's quick start walkthrough, line by line, in a fresh temporary
// directory with the embedded file store (no services). The test of the quick start uses the
// same extraction, so the README, the demo and the test cannot drift apart.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The quick start's ```sh block as steps; a line may say `# exits N` (default 0). */
export function quickStartSteps(readme) {
  const section = /^## Quick start\n([\s\S]*?)(?=^## )/m.exec(readme)?.[1];
  if (!section) throw new Error('README.md has no "## Quick start" section');
  const blocks = [...section.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
  if (blocks.length !== 1) throw new Error(`the Quick start section must have exactly one \`\`\`sh block, found ${blocks.length}`);
  return blocks[0]
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.trim().startsWith('#'))
    .map((line) => ({ line, exit: Number(/#\s*exits (\d+)/.exec(line)?.[1] ?? 0) }));
}

const quote = (s) => `'${s.replace(/'/g, `'\\''`)}'`;

/** A bash script that runs the steps in `work`, stopping at the first unexpected exit code. */
export function quickStartScript(steps, binDir, work) {
  return [
    'set -u',
    `export PATH=${JSON.stringify(binDir)}:"$PATH"`,
    `cd ${JSON.stringify(work)}`,
    ...steps.flatMap((s, i) => [
      `printf '$ %s\\n' ${quote(s.line)}`,
      s.line,
      `rc=$?; if [ "$rc" -ne ${s.exit} ]; then echo "quick start step ${i + 1} exited $rc, expected ${s.exit}: "${quote(s.line)} >&2; exit 90; fi`,
    ]),
  ].join('\n') + '\n';
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = mkdtempSync(join(tmpdir(), 'kk-demo-'));
  const work = join(root, 'work');
  mkdirSync(work);
  const steps = quickStartSteps(readFileSync(join(REPO_ROOT, 'README.md'), 'utf8'));
  writeFileSync(join(root, 'quickstart.sh'), quickStartScript(steps, join(REPO_ROOT, 'node_modules', '.bin'), work));
  const r = spawnSync('bash', [join(root, 'quickstart.sh')], { stdio: 'inherit', env: { ...process.env, KK_STATE_DIR: join(root, 'state') } });
  console.log(r.status === 0 ? `\nquick start done; its files are in ${work}` : `\nquick start failed (exit ${r.status}); see ${work}`);
  process.exit(r.status ?? 1);
}
