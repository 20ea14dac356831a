import { Errors, Flags } from '@oclif/core';
import { KkCommand, type Outcome } from '../../base.js';
import { EXIT } from '../../exit-codes.js';
import { deployFlags, keyValues, runDeploy } from './status.js';

/** `[IP:]HOST:CONTAINER[/tcp|udp]` as the API's port object. */
function port(text: string): Record<string, unknown> {
  const m = /^(?:([0-9.]+|\[[0-9a-f:]+\]):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/i.exec(text);
  if (!m) throw new Errors.CLIError(`-p ${JSON.stringify(text)} must be [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`, { exit: EXIT.USAGE });
  return { host: Number(m[2]), container: Number(m[3]), ...(m[4] ? { protocol: m[4].toLowerCase() } : {}), ...(m[1] ? { host_ip: m[1].replace(/^\[|\]$/g, '') } : {}) };
}

export default class DeployDocker extends KkCommand<typeof DeployDocker> {
  static override summary = 'Deploy a container image on a node: pull, stop the old container, start the new one, check health, roll back on failure.';
  static override description = 'The node\'s agent talks to the Docker Engine API on its DOCKER_HOST (a unix socket): it pulls --image (with progress), stops and keeps the old container --name, and starts the new one with the ports, environment, volumes and restart policy given. A container that does not stay up, or a failed health check, brings the previous container back and re-checks health; the image is marked bad for that container name. Returns at once with the deploy (202); --wait follows it to the end.';
  static override examples = [
    '<%= config.bin %> deploy docker --node web-1 --image registry.local/shop/web:1.4.2 --name web -p 8080:80 -e MODE=prod --health http://127.0.0.1:8080/ --wait',
  ];
  static override flags = {
    ...deployFlags,
    image: Flags.string({ summary: 'The image reference to run.', required: true, helpValue: 'REF' }),
    name: Flags.string({ summary: 'The container name (the deploy target).', required: true, helpValue: 'NAME' }),
    publish: Flags.string({ char: 'p', summary: 'Publish a port, [IP:]HOST:CONTAINER[/tcp|udp] (repeatable).', multiple: true, helpValue: 'PORTS' }),
    'container-env': Flags.string({ char: 'e', summary: 'Container environment, KEY=VALUE (repeatable).', multiple: true, helpValue: 'KEY=VALUE' }),
    volume: Flags.string({ char: 'v', summary: 'Bind mount HOST:CONTAINER[:ro] (repeatable).', multiple: true, helpValue: 'BIND' }),
    restart: Flags.string({ summary: 'Restart policy.', options: ['no', 'always', 'unless-stopped', 'on-failure'] }),
    network: Flags.string({ summary: 'Network mode (host shares the node\'s network).', helpValue: 'MODE' }),
    'stop-timeout': Flags.integer({ summary: 'Seconds the old container gets to stop [default: 10].', min: 0, max: 3600, helpValue: 'SECONDS' }),
    'insecure-registry': Flags.boolean({ summary: 'Pull over plain HTTP (a registry on a private network).' }),
    cmd: Flags.string({ summary: 'Command for the container instead of the image\'s (repeat for each argument).', multiple: true, helpValue: 'ARG' }),
  };

  protected async exec(): Promise<Outcome> {
    const f = this.flags;
    const env = keyValues(f['container-env'], '-e');
    const body = {
      image: f.image,
      name: f.name,
      ...(f.publish?.length ? { ports: f.publish.map(port) } : {}),
      ...(env ? { container_env: env } : {}),
      ...(f.volume?.length ? { volumes: f.volume } : {}),
      ...(f.restart ? { restart: f.restart } : {}),
      ...(f.network ? { network: f.network } : {}),
      ...(f['stop-timeout'] !== undefined ? { stop_timeout: f['stop-timeout'] } : {}),
      ...(f['insecure-registry'] ? { insecure: true } : {}),
      ...(f.cmd?.length ? { cmd: f.cmd } : {}),
    };
    return runDeploy({ loadConfig: () => this.loadKkConfig({ required: false }) }, f, 'docker', body);
  }
}
