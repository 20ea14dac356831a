// Deploys (DESIGN 14, seed 003): records, the state machine, bad versions, callbacks.
export * from './deploys.js';
export { DEPLOY_STATUSES, DEPLOY_TRANSITIONS, deployAllowed, transitionDeploy, type DeployChange, type DeployStatus, type DeployType } from './machine.js';
export { DEPLOYS_CLAIM_MIGRATION_NAME, DEPLOYS_MIGRATION_NAME, deploysClaimMigration, deploysMigration } from './migration.js';
export type * from './schema.js';
