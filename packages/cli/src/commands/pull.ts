import { Flags } from '@oclif/core';
import { readFile } from 'node:fs/promises';
import { DEFAULT_PULL_MAX_DEPTH, type FallbackEvent, KkError, PULL_MODES, type PullResult, agentId, pull } from '@kk/core';
import { KkCommand, type Outcome } from '../base.js';
import { appFlag, concurrencyFlag, dryRunFlag, pathFlag, projectFlag, stateDirFlag, storeFlags, versionFlag } from '../flags.js';
import { renderApply } from '../render.js';

export default class Pull extends KkCommand<typeof Pull> {
  static override summary = 'Mirror a version onto a deploy directory.';
  static override description = `Makes --path hold exactly the version's files, in place: only missing or changed files are written (chunks are copied from local files where possible, fetched otherwise, every one verified), files the version lacks are deleted, paths matching the config's ignore rules are never touched. Every changed file is staged first, so a failure leaves the directory as it was. Requires the config file. --version takes a version name, "latest", or a channel such as "promoted".`;
  static override examples = [
    '<%= config.bin %> pull --project myproject --app myapp --version 1.0.0 --path /opt/apps/myproject/myapp --config .kkartifact.yml',
    '<%= config.bin %> pull -p myproject -a myapp --version promoted --path /opt/apps/myproject/myapp --dry-run',
  ];
  static override flags = {
    project: projectFlag,
    app: appFlag,
    version: versionFlag('A version name, "latest", or a channel such as "promoted".'),
    path: pathFlag('Deploy directory to mirror the version onto.'),
    ...storeFlags,
    concurrency: concurrencyFlag,
    'state-dir': stateDirFlag,
    'dry-run': dryRunFlag,
    adopt: Flags.boolean({ summary: 'Take over a non-empty directory kk has never deployed to (files the version lacks are deleted).' }),
    'max-delete': Flags.integer({ summary: 'Refuse when more than N files would be deleted.', min: 0, helpValue: 'N' }),
    verify: Flags.boolean({ summary: 'Rehash every file in the directory instead of trusting what kk recorded.' }),
    force: Flags.boolean({
      summary: 'Apply even when the directory holds another app, the version is empty, or the path is a symlink that now leads elsewhere than the directory kk manages.',
    }),
    repair: Flags.boolean({ summary: 'Drop an interrupted commit that cannot be finished and plan again from the directory as it is.' }),
    'cache-versions': Flags.integer({ summary: 'Keep replaced files of the last N earlier versions for offline rollback [default: 1].', min: 0, helpValue: 'N' }),
    'cache-max-mib': Flags.integer({ summary: 'Cap the space the cache of replaced files holds by itself, in MiB [default: no cap].', min: 0, helpValue: 'MIB' }),
    mode: Flags.string({
      summary: 'full: mirror, deleting what the version lacks only after a complete scan; skip-existing: only add what is missing, never compare or delete; events: apply only the --changed paths, no scan.',
      options: [...PULL_MODES],
      default: 'full',
    }),
    changed: Flags.string({ summary: 'With --mode events: a changed path, relative to --path (repeatable; a directory means everything below it).', multiple: true, helpValue: 'PATH' }),
    'changed-from': Flags.string({ summary: 'With --mode events: read the changed paths from this file, one per line ("-" for stdin).', helpValue: 'FILE' }),
    'max-depth': Flags.integer({ summary: `Directories nested deeper are neither scanned nor written, with a warning [default: ${DEFAULT_PULL_MAX_DEPTH}].`, min: 1, helpValue: 'N' }),
    'fallback-store': Flags.string({
      summary: 'A store tried next when the store fails with a backend error (repeatable, in order; overrides the config\'s fallback_stores), e.g. the S3 bucket behind a kk server.',
      multiple: true,
      helpValue: 'URL',
    }),
    'rate-limit': Flags.integer({ summary: 'At most N store read requests a second (overrides the config\'s rate_limit).', min: 1, helpValue: 'N' }),
    'on-local-change': Flags.string({
      summary: 'fail: refuse, changing nothing, when a file changed locally since kk wrote it (or one kk never wrote) would be overwritten or deleted; overwrite: make the directory equal the version.',
      options: ['fail', 'overwrite'],
      default: 'overwrite',
    }),
  };

  protected async exec(): Promise<Outcome<PullResult & { storeFallbacks: FallbackEvent[] }>> {
    const f = this.flags;
    const config = (await this.loadKkConfig({ required: true }))!;
    const paths = [...(f.changed ?? []), ...(f['changed-from'] ? await readPathList(f['changed-from']) : [])];
    if (paths.length && f.mode !== 'events') throw new KkError('CONFIG_INVALID', '--changed and --changed-from apply only with --mode events', { hint: 'add --mode events, or drop the path list' });
    const { store, fallbacks } = await this.openPullStore(config, {
      ...(f['fallback-store']?.length ? { fallbackStores: f['fallback-store'] } : {}),
      ...(f['rate-limit'] !== undefined ? { rateLimit: f['rate-limit'] } : {}),
    });
    const result = await pull({
      store,
      hasher: this.hasher,
      project: f.project,
      app: f.app,
      version: f.version,
      target: f.path,
      stateDir: this.stateDir(),
      ignore: config.ignore,
      adopt: f.adopt,
      maxDelete: f['max-delete'],
      dryRun: f['dry-run'],
      verify: f.verify,
      force: f.force,
      repair: f.repair,
      ...(f['cache-versions'] !== undefined ? { cacheVersions: f['cache-versions'] } : {}),
      ...(f['cache-max-mib'] !== undefined ? { cacheMaxBytes: f['cache-max-mib'] * 1024 * 1024 } : {}),
      mode: f.mode as (typeof PULL_MODES)[number],
      ...(paths.length ? { paths } : {}),
      ...(f['max-depth'] !== undefined ? { maxDepth: f['max-depth'] } : {}),
      onLocalChange: f['on-local-change'] as 'fail' | 'overwrite',
      concurrency: this.concurrency(config),
      onProgress: this.onProgress,
      command: 'pull',
      // Names this machine in the server's audit log and `pull` event (issue 10 item 4).
      agent: await agentId(this.stateDir()),
    });
    // Which stores failed and which one served (seed 004: the fallback is said in the result).
    const out = { ...result, storeFallbacks: fallbacks };
    return {
      result: out,
      render: (r) => [
        ...renderApply(r, 'deployed', !!f.verbose),
        ...r.warnings.map((w) => `  warning: ${w}`),
        ...r.storeFallbacks.map((e) => `  store fallback: ${e.from} failed (${e.reason}); served by ${e.to}`),
      ],
    };
  }
}

/** Changed paths, one per line; blank lines and a leading "./" or "/" are dropped. */
async function readPathList(file: string): Promise<string[]> {
  const text = file === '-' ? await new Promise<string>((res, rej) => {
    let buf = '';
    process.stdin.setEncoding('utf8').on('data', (d) => (buf += d)).on('end', () => res(buf)).on('error', rej);
  }) : await readFile(file, 'utf8');
  return text.split('\n').map((l) => l.trim().replace(/^\.?\/+/, '')).filter(Boolean);
}
