import { Flags } from '@oclif/core';
import { KkCommand, type Outcome } from '../../base.js';
import { deployFlags, keyValues, runDeploy, scriptFile } from './status.js';

export default class DeployShell extends KkCommand<typeof DeployShell> {
  static override summary = 'Run a shell script on a node as a deploy: timeout, captured output, health check, and the rollback script on failure.';
  static override description = 'The script (at most 100 KB) runs with sh in --workdir with --env. A non-zero exit, running past --timeout, or a failed health check counts as a failure: the rollback script runs (once), then the health check again. Returns at once with the deploy (202); --wait follows it to the end.';
  static override examples = [
    '<%= config.bin %> deploy shell --node web-1 --script deploy.sh --rollback-script undo.sh --timeout 60s --wait',
    '<%= config.bin %> deploy shell --node web-1 --script migrate.sh --health tcp://127.0.0.1:5432 --json',
  ];
  static override flags = {
    ...deployFlags,
    script: Flags.string({ summary: 'The script file to run.', required: true, helpValue: 'FILE' }),
    'rollback-script': Flags.string({ summary: 'The script file that undoes it (run on a failure).', helpValue: 'FILE' }),
    workdir: Flags.string({ summary: 'Absolute directory on the node to run in [default: the agent\'s].', helpValue: 'DIR' }),
    env: Flags.string({ summary: 'Environment for the script, KEY=VALUE (repeatable).', multiple: true, helpValue: 'KEY=VALUE' }),
  };

  protected async exec(): Promise<Outcome> {
    const f = this.flags;
    const env = keyValues(f.env, '--env');
    const body = {
      script: await scriptFile(f.script, '--script'),
      ...(f['rollback-script'] ? { rollback_script: await scriptFile(f['rollback-script'], '--rollback-script') } : {}),
      ...(f.workdir ? { workdir: f.workdir } : {}),
      ...(env ? { env } : {}),
    };
    return runDeploy({ loadConfig: () => this.loadKkConfig({ required: false }) }, f, 'shell', body);
  }
}
