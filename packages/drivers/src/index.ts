// @kk/drivers: the store drivers and the URL-scheme registry that picks one.
export { createFileDriver, type FileDriverOptions } from './file.js';
export { registerDriver, openDriver, describeStoreUrl, type DriverFactory, type OpenDriverOptions } from './registry.js';
