import { Flags } from '@oclif/core';
import { KkCommand, type Outcome } from '../../base.js';
import { deployFlags, keyValues, runDeploy, scriptFile } from './status.js';

export default class DeployKk extends KkCommand<typeof DeployKk> {
  static override summary = 'Deploy a kk version to a directory on a node, with optional hook scripts, a health check and automatic rollback.';
  static override description = 'The node\'s agent applies the version with kk\'s pull (atomic, from the store), runs --pre before and --post after it in the directory, then checks health. A failing hook, a timeout or a failed health check rolls back to the previous version from the node\'s local state (seconds, no network), runs --post again and re-checks health; the version is marked bad for that directory. Returns at once with the deploy (202); --wait follows it to the end.';
  static override examples = [
    '<%= config.bin %> deploy kk --node web-1 --project shop --app web --version 1.4.2 --path /srv/shop --health http://127.0.0.1:8080/health --wait',
  ];
  static override flags = {
    ...deployFlags,
    project: Flags.string({ char: 'p', summary: 'Project name.', required: true, helpValue: 'NAME' }),
    app: Flags.string({ char: 'a', summary: 'App name.', required: true, helpValue: 'NAME' }),
    version: Flags.string({ summary: 'The version to deploy.', required: true, helpValue: 'VERSION' }),
    path: Flags.string({ summary: 'Absolute deploy directory on the node.', required: true, helpValue: 'DIR' }),
    pre: Flags.string({ summary: 'Hook script file run in the directory before the version is applied.', helpValue: 'FILE' }),
    post: Flags.string({ summary: 'Hook script file run in the directory after it is applied (and after a rollback).', helpValue: 'FILE' }),
    env: Flags.string({ summary: 'Environment for the hooks and a script health check, KEY=VALUE (repeatable).', multiple: true, helpValue: 'KEY=VALUE' }),
  };

  protected async exec(): Promise<Outcome> {
    const f = this.flags;
    const env = keyValues(f.env, '--env');
    const body = {
      project: f.project,
      app: f.app,
      version: f.version,
      path: f.path,
      ...(f.pre ? { pre: await scriptFile(f.pre, '--pre') } : {}),
      ...(f.post ? { post: await scriptFile(f.post, '--post') } : {}),
      ...(env ? { env } : {}),
    };
    return runDeploy({ loadConfig: () => this.loadKkConfig({ required: false }) }, f, 'kk', body);
  }
}
