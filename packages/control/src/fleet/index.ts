// The fleet (DESIGN 13): nodes, targets, sync tasks and their rules.
export * from './fleet.js';
export * from './machine.js';
export * from './retry.js';
export { FLEET_MIGRATION_NAME, FLEET_MODE_MIGRATION_NAME, fleetMigration, fleetModeMigration } from './migration.js';
export type * from './schema.js';
