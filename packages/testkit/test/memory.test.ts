import { createMemoryDriver } from '@kk/core';
import { runDriverConformance } from '../src/index.js';

runDriverConformance('memory', async () => ({ driver: createMemoryDriver() }));
