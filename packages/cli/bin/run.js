#!/usr/bin/env node
// The `kk` executable: oclif finds the commands in ../dist/commands (run `npm run build` first).
import { execute } from '@oclif/core';

await execute({ dir: import.meta.url });
