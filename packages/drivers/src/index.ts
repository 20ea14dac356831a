// @kk/drivers: the store drivers and the URL-scheme registry that picks one.
export { createFileDriver, type FileDriverOptions } from './file.js';
export { createS3Driver, s3DriverOptionsFromUrl, type S3DriverOptions } from './s3.js';
export { createHttpDriver, openHttpDriver, type HttpDriverOptions } from './http.js';
export { registerDriver, openDriver, describeStoreUrl, type DriverFactory, type OpenDriverOptions } from './registry.js';
