// Every flag kk shares between commands, defined once. Commands pick the groups they need;
// `outputFlags` are on every command through KkCommand.baseFlags.
import { Flags } from '@oclif/core';
import { CONFIG_FILE } from '@kk/core';

/** --json, --quiet, --verbose: how a command talks. */
export const outputFlags = {
  json: Flags.boolean({
    summary: 'Print one JSON document on stdout (the result, or the error); logs and progress go to stderr.',
    helpGroup: 'OUTPUT',
  }),
  quiet: Flags.boolean({
    char: 'q',
    summary: 'No progress and no summary; errors are still printed.',
    helpGroup: 'OUTPUT',
  }),
  verbose: Flags.boolean({
    summary: 'More detail: complete path lists, stack traces of unexpected errors.',
    helpGroup: 'OUTPUT',
  }),
};

/** Where the store is and where the config file is. Precedence: flag > environment > config file. */
export const storeFlags = {
  store: Flags.string({
    char: 's',
    summary: 'Store URL or path; overrides `store`/`server_url` of the config file.',
    description: 'A plain or relative path is an embedded file store. Relative paths given here resolve against the current directory; in the config file, against the config file\'s directory.',
    env: 'KK_STORE',
    helpValue: 'URL',
  }),
  config: Flags.string({
    summary: `Config file [default: ./${CONFIG_FILE}].`,
    env: 'KK_CONFIG',
    helpValue: 'FILE',
  }),
  token: Flags.string({
    summary: 'Access token for a kk server store; overrides `token` of the config file.',
    env: 'KK_TOKEN',
    helpValue: 'TOKEN',
  }),
};

export const concurrencyFlag = Flags.integer({
  summary: 'Parallel transfers [default: the config\'s `concurrency`, else 8].',
  min: 1,
  max: 1024,
  helpValue: 'N',
});

export const stateDirFlag = Flags.string({
  summary: 'Where kk keeps the local state of deploy directories [default: $XDG_STATE_HOME/kk or ~/.local/state/kk].',
  env: 'KK_STATE_DIR',
  helpValue: 'DIR',
});

export const dryRunFlag = Flags.boolean({
  summary: 'Show what would happen; change nothing.',
});

/** The seed's invocation flags (seed 001 7.4): --project --app --version --path, all required. */
export const projectFlag = Flags.string({ char: 'p', summary: 'Project name.', required: true, helpValue: 'NAME' });

export const appFlag = Flags.string({ char: 'a', summary: 'App name.', required: true, helpValue: 'NAME' });

export const versionFlag = (summary: string) => Flags.string({ summary, required: true, helpValue: 'VERSION' });

export const pathFlag = (summary: string) => Flags.string({ summary, required: true, helpValue: 'DIR' });
