// `kk nosuch`: one line and the usage exit code, like every other kk error.
import type { Hook } from '@oclif/core';
import { EXIT } from '../exit-codes.js';

const hook: Hook<'command_not_found'> = async function (opts) {
  const known = opts.config.commandIDs.filter((id) => !opts.config.findCommand(id)?.hidden).sort();
  process.stderr.write(`kk: unknown command "${opts.id}"\n  commands: ${known.join(', ')} (kk --help describes them)\n`);
  this.exit(EXIT.USAGE);
};

export default hook;
