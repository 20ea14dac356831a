import { basename } from 'node:path';
import { Flags } from '@oclif/core';
import { deploy } from '@kk/agent';
import { KkCommand, type Outcome } from '../../base.js';
import { serverOf } from '../token/list.js';
import { deployFlags, runDeploy, scriptFile } from './status.js';

export default class DeployTar extends KkCommand<typeof DeployTar> {
  static override summary = 'Deploy a .tar.gz to a directory on a node: sent as chunks through the store (resumable), checked, extracted safely, installed.';
  static override description = 'The archive goes to the server\'s store in 1 MiB chunks; chunks the store already has are not sent again, so an upload cut short resumes where it stopped. The node receives it (uploading 0-30%), checks its sha256, refuses it whole if any entry is absolute, climbs out with .., links out or is a device (nothing written), extracts it beside the directory and swaps it in (30-60%), runs --install-script in it (60-90%), then checks health (90-100%). A failure puts the previous tree back. Returns once the deploy is accepted (202); --wait follows it to the end.';
  static override examples = ['<%= config.bin %> deploy tar --node web-1 --file build.tar.gz --path /srv/app --install-script install.sh --health tcp://127.0.0.1:8080 --wait'];
  static override flags = {
    ...deployFlags,
    file: Flags.string({ summary: 'The .tar.gz to deploy.', required: true, helpValue: 'FILE' }),
    path: Flags.string({ summary: 'Absolute directory on the node it is extracted into.', required: true, helpValue: 'DIR' }),
    'install-script': Flags.string({ summary: 'Script file run in the extracted directory.', helpValue: 'FILE' }),
  };

  protected async exec(): Promise<Outcome> {
    const f = this.flags;
    const { url, token } = await serverOf(f, () => this.loadKkConfig({ required: false }));
    const store = await this.openStoreLocation({ url, cwd: process.cwd() }, {}, token);
    const t0 = Date.now();
    let lastLine = 0;
    const up = await deploy.uploadFile(store, f.file, {
      name: basename(f.file),
      onProgress: (done, total) => {
        if (f.quiet || Date.now() - lastLine < 1_000) return;
        lastLine = Date.now();
        process.stderr.write(`kk: uploading ${basename(f.file)}: ${Math.round((done / Math.max(1, total)) * 100)}% of ${total} bytes still missing in the store\n`);
      },
    });
    if (!f.quiet) process.stderr.write(`kk: uploaded ${basename(f.file)} (${up.size} bytes): sent ${up.sent} of ${up.chunks} chunks (${up.bytes_sent} bytes) in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    const body = { upload: up.upload, sha256: up.sha256, path: f.path, ...(f['install-script'] ? { install_script: await scriptFile(f['install-script'], '--install-script') } : {}) };
    const out = await runDeploy({ loadConfig: () => this.loadKkConfig({ required: false }) }, { ...f, server: url, token }, 'tar', body);
    return { ...out, result: { ...out.result, upload: up } };
  }
}
