// Renderings of core results that several commands share.
import type { PullResult, VersionDiff } from '@kk/core';
import { formatBytes, formatDuration, shortDigest } from './format.js';

/** "+1 ~2 -0 files" */
export function changeCounts(added: number, changed: number, deleted: number): string {
  return `+${added} ~${changed} -${deleted} files`;
}

/** One line per path: `+ added`, `~ changed`, `- deleted`, `m` mode or mtime only. */
export function pathLines(paths: NonNullable<PullResult['paths']>): string[] {
  return [
    ...paths.added.map((p) => `+ ${p}`),
    ...paths.changed.map((p) => `~ ${p}`),
    ...paths.deleted.map((p) => `- ${p}`),
    ...paths.metaOnly.map((p) => `m ${p}`),
  ];
}

/** Summary of an apply (pull, rollback), or of the plan with --dry-run. */
export function renderApply(r: PullResult, verb: 'deployed' | 'rolled back', verbose: boolean): string[] {
  const p = r.plan;
  const name = `${r.project}/${r.app} ${r.version}`;
  if (r.dryRun) {
    const lines = [
      r.upToDate
        ? `${r.target} already holds ${name}; nothing to do`
        : `dry run: ${r.target} -> ${name}: would write ${changeCounts(p.filesAdded, p.filesChanged, p.filesDeleted)} (${formatBytes(p.bytesToWrite)}), ${p.filesMetaOnly} metadata-only`,
    ];
    if (r.paths) lines.push(...pathLines(r.paths).map((l) => `  ${l}`));
    lines.push(...protectionLines(r));
    return lines;
  }
  if (r.upToDate) return [`${r.target} already holds ${name} (${shortDigest(r.manifest)})`];
  const was = r.previous ? ` (was ${r.previous})` : '';
  const lines = [
    `${verb} ${name} to ${r.target}${was}: ${changeCounts(p.filesAdded, p.filesChanged, p.filesDeleted)}, ${p.filesUnchanged} unchanged`,
    `  wrote ${formatBytes(p.bytesToWrite)}: fetched ${formatBytes(r.bytesFetchedRaw)} (${formatBytes(r.bytesFetched)} transferred${r.chunksFromDeltas ? `, ${r.chunksFromDeltas} chunks as deltas` : ''}), seeded ${formatBytes(r.bytesSeeded)} from local files; in ${formatDuration(r.durationMs / 1000)}`,
  ];
  if (r.recovered) lines.push('  finished an interrupted earlier apply first');
  if (verbose) lines.push(`  hashed ${formatBytes(r.bytesHashed)} to compare existing files`);
  return lines;
}

/** "protected by ignore rules": each protected path and the rule (local config or the version's push). */
export function protectionLines(r: PullResult): string[] {
  const pr = r.protected;
  if (!pr || pr.total === 0) return [];
  const lines = [`  protected by ignore rules (never touched): ${pr.total} path${pr.total === 1 ? '' : 's'}`];
  for (const p of pr.paths) lines.push(`  = ${p.path}  (rule ${JSON.stringify(p.rule)} from ${p.from === 'local' ? 'the local config' : 'the version'})`);
  if (pr.total > pr.paths.length) lines.push(`  ... and ${pr.total - pr.paths.length} more`);
  return lines;
}

export function renderVersionDiff(d: VersionDiff, verbose: boolean): string[] {
  const total = d.added.length + d.changed.length + d.deleted.length + d.modeChanged.length;
  const lines = [
    total === 0
      ? `${d.from} and ${d.to} have the same files`
      : `${d.from} -> ${d.to}: ${changeCounts(d.added.length, d.changed.length, d.deleted.length)}, ${d.modeChanged.length} mode-only (${formatBytes(d.bytesChanged)} new or changed)`,
  ];
  const list = [
    ...d.added.map((p) => `+ ${p}`),
    ...d.changed.map((p) => `~ ${p}`),
    ...d.deleted.map((p) => `- ${p}`),
    ...d.modeChanged.map((p) => `m ${p}`),
  ];
  if (verbose || list.length <= 50) lines.push(...list.map((l) => `  ${l}`));
  else lines.push(...list.slice(0, 50).map((l) => `  ${l}`), `  ... and ${list.length - 50} more (--verbose lists all, --json too)`);
  return lines;
}
