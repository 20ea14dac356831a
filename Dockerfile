# The kk server image used by docker-compose.yml: build the workspaces, then run
# `kk serve` from a slim image holding only production dependencies and compiled code.
# The store URL and the listen address come from the command (see docker-compose.yml).

FROM node:20-bookworm-slim AS build
WORKDIR /src
# Manifests first, so the dependency layer is rebuilt only when they change.
COPY package.json package-lock.json tsconfig.json tsconfig.base.json ./
COPY packages/core/package.json packages/core/
COPY packages/drivers/package.json packages/drivers/
COPY packages/testkit/package.json packages/testkit/
COPY packages/control/package.json packages/control/
COPY packages/cli/package.json packages/cli/
COPY packages/server/package.json packages/server/
RUN npm ci --no-audit --no-fund
COPY packages packages
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
WORKDIR /app
COPY --from=build /src/package.json /src/package-lock.json ./
# node_modules/@kk/* are relative symlinks into packages/, kept as they are by COPY.
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/packages packages
RUN mkdir -p /var/lib/kk/tmp && chown -R node:node /var/lib/kk
USER node
VOLUME /var/lib/kk
EXPOSE 8080
ENTRYPOINT ["node", "packages/cli/bin/run.js"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
