#!/usr/bin/env node
// The `kk` executable: oclif finds the commands in ../dist/commands (run `npm run build` first).
import { execute } from '@oclif/core';

// The AWS SDK warns on every S3 command that its future releases will need a newer Node. That
// is a note for kk's maintainers, not for people running kk: drop that one warning, only it.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = (warning, ...rest) => {
  const text = typeof warning === 'string' ? warning : warning?.message;
  if (typeof text === 'string' && text.startsWith('NodeVersionSupportWarning')) return;
  emitWarning(warning, ...rest);
};

await execute({ dir: import.meta.url });
