// @kk/drivers: the store drivers and the URL-scheme registry that picks one.
export { createFileDriver, type FileDriverOptions } from './file.js';
// The s3 driver itself is `@kk/drivers/s3`, so importing this module does not load the AWS SDK.
export type { S3DriverOptions } from './s3.js';
// Likewise the http driver is `@kk/drivers/http`: undici costs ~140 ms to import.
export type { HttpDriverOptions } from './http.js';
export { createSshDriver, sshDriverOptionsFromUrl, type SshDriverOptions, type SshTraffic } from './ssh.js';
// docker:// is `@kk/drivers/docker` (undici again); its key mapping is shared with tar://.
export type { DockerDriverOptions } from './docker.js';
export type { TarDriverOptions } from './tar-store.js';
export { registerDriver, openDriver, openDriverChain, describeStoreUrl, type DriverFactory, type OpenDriverOptions } from './registry.js';
