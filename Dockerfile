# syntax=docker/dockerfile:1
# balance-sync: one image for the service (default command) and the demo producer.
# The container runs exactly what `npm start` runs natively: node dist/src/main.js with the same
# memory settings (MALLOC_ARENA_MAX and the two V8 flags; test/unit/launch-settings.test.ts keeps them equal).

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
# Memory (docs/BENCHMARKS.md §2.4): with Node's defaults a 3,000-message drain peaked at 408-492 MiB
# RSS. Two glibc malloc arenas instead of 8 per core hold ~55 MiB less native memory (Rust core,
# libuv threads); a 384 MiB old space makes V8 collect at ~1.35x the live heap instead of up to 4x in
# each of the 3 isolates (main + one workflow thread per worker), and 4 MiB semi-spaces cap each young
# generation at 12 MiB instead of 48. The live heaps stay far below (main thread 40-52 MiB used at the peak).
ENV MALLOC_ARENA_MAX=2
CMD ["node", "--max-old-space-size=384", "--max-semi-space-size=4", "dist/src/main.js"]
