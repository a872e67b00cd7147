# syntax=docker/dockerfile:1
# balance-sync: one image for the service (default command) and the demo producer.
# The container runs exactly what `npm start` runs natively: node dist/src/main.js.

ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# ---- build: compile TypeScript and prebuild the workflow bundle (dist/workflow-bundle.js) ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies and the compiled output only ----
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# The demo producer (node dist/src/producer/main.js) creates and seeds the original tables from this.
COPY fixtures ./fixtures
# Files stay owned by root (read-only to the service); the process runs as the image's `node` user.
USER node
# /metrics, /healthz, /readyz
EXPOSE 9464
CMD ["node", "dist/src/main.js"]
