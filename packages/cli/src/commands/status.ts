import { targetStatus } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { pathFlag, stateDirFlag } from '../flags.js';
import { formatBytes, formatWhen, shortDigest } from '../format.js';

type TargetStatus = Awaited<ReturnType<typeof targetStatus>>;

export default class Status extends KkCommand<typeof Status> {
  static override summary = 'Show what is deployed at a path, since when, what was there before, and who holds its apply lock.';
  static override description = 'Reads only kk\'s local state for the directory; no store or config needed.';
  static override examples = ['<%= config.bin %> status --path /opt/apps/myproject/myapp', '<%= config.bin %> status --path /opt/apps/myproject/myapp --json'];
  static override flags = {
    path: pathFlag('Deploy directory.'),
    'state-dir': stateDirFlag,
  };

  protected async exec(): Promise<Outcome<TargetStatus>> {
    const result = await targetStatus(this.flags.path, this.stateDir());
    return { result, essential: true, render: renderStatus };
  }
}

function renderStatus(s: TargetStatus): string[] {
  const lines = [s.target];
  const c = s.current;
  if (!s.managed || !c) lines.push(`  deployed: nothing yet (kk's state for it: ${s.stateDir})`);
  else lines.push(`  deployed: ${c.project}/${c.app} ${c.version} (${shortDigest(c.manifest)}) since ${formatWhen(c.appliedAt)}`);
  const earlier = s.history.slice(1);
  if (earlier.length) {
    lines.push('  previous:');
    for (const h of earlier) lines.push(`    ${h.version} (${shortDigest(h.manifest)}) applied ${formatWhen(h.appliedAt)}`);
  }
  if (s.paused) lines.push(`  paused: by ${s.paused.by}${s.paused.since ? ` since ${formatWhen(s.paused.since)}` : ''}: ${s.paused.reason} (every pull here is refused until \`kk resume --path\`)`);
  if (!s.lock) lines.push('  lock: free');
  else if (s.lock.stale) lines.push(`  lock: left behind by pid ${s.lock.pid} on ${s.lock.host} (no longer running; the next apply takes it over)`);
  else lines.push(`  lock: held by pid ${s.lock.pid} on ${s.lock.host} (${s.lock.command}) since ${formatWhen(s.lock.started)}`);
  const c2 = s.cache;
  lines.push(`  file cache: ${c2.files} files, ${formatBytes(c2.bytes)} held by the cache alone${c2.bytesShared ? ` (+${formatBytes(c2.bytesShared)} shared with the directory)` : ''}`);
  if (s.interrupted) lines.push('  an apply was interrupted; the next pull or rollback finishes it (if it cannot, `kk pull --repair` plans again from the directory as it is)');
  return lines;
}
