# syntax=docker/dockerfile:1
# Switchboard server image. Build from the repository root:
#   docker build -t switchboard .
# Runs as the unprivileged `node` user, writes nothing to its filesystem (run it with a read-only
# root filesystem), and runs under tini so that SIGTERM reaches the server (which drains: see
# docs/operations.md, "Rolling updates and drain") and zombies are reaped.

# Stage 1: compile the TypeScript workspaces.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY packages/protocol/package.json packages/protocol/
COPY packages/server/package.json packages/server/
COPY packages/client/package.json packages/client/
RUN npm ci --no-audit --no-fund
COPY packages/protocol packages/protocol
COPY packages/server packages/server
COPY packages/client packages/client
RUN npx tsc -b packages/server

# Stage 2: production dependencies only (ws, ioredis, jose, pino, prom-client, uWebSockets.js).
FROM node:20-bookworm-slim AS deps
WORKDIR /src
COPY package.json package-lock.json ./
COPY packages/protocol/package.json packages/protocol/
COPY packages/server/package.json packages/server/
COPY packages/client/package.json packages/client/
RUN npm ci --omit=dev --no-audit --no-fund

# Stage 3: the runtime, with neither compiler nor npm cache.
FROM node:20-bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production \
    SWITCHBOARD_HOST=0.0.0.0 \
    SWITCHBOARD_PORT=8080
COPY --from=deps /src/node_modules node_modules
COPY --from=build /src/package.json package.json
COPY --from=build /src/packages/protocol/package.json packages/protocol/package.json
COPY --from=build /src/packages/protocol/dist packages/protocol/dist
COPY --from=build /src/packages/server/package.json packages/server/package.json
COPY --from=build /src/packages/server/dist packages/server/dist
USER node
EXPOSE 8080
STOPSIGNAL SIGTERM
# node, not curl (the slim image has none); /healthz answers 200 while the process serves.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.SWITCHBOARD_PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--"]
# node directly, not `npm start`: npm does not pass SIGTERM on reliably and would hide the drain.
CMD ["node", "packages/server/dist/cli/main.js", "serve"]
