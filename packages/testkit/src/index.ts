// @kk/testkit: the shared driver conformance suite for vitest.
export { runDriverConformance, type DriverUnderTest } from './conformance.js';
