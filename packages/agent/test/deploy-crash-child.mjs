// A child process of deploy-kinds.test.ts: runs one shell deploy with the journal in argv[2]
// until the parent SIGKILLs it during the health check.
import { deploy } from '../dist/index.js';

const [journalDir, specJson] = process.argv.slice(2);
const d = new deploy.Deployer({ journalDir, kinds: deploy.defaultKinds() });
await d.deploy('dep-crash', JSON.parse(specJson));
