# Multi-stage build of the tokenusage binary. Used by docker-compose.yml.
# Stage 1 fetches the dashboard's npm dependencies (uPlot, pinned by
# web/package-lock.json); stage 2 compiles (librdkafka is built from source
# by rdkafka-sys, hence cmake-free make/gcc); stage 3 is a slim runtime.

FROM node:20-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends build-essential python3 && rm -rf /var/lib/apt/lists/*
COPY . .
COPY --from=web /src/web/node_modules web/node_modules
RUN cargo build --release --locked -p tokenusage

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /nonexistent tokenusage
COPY --from=build /src/target/release/tokenusage /usr/local/bin/tokenusage
USER tokenusage
EXPOSE 8080
ENTRYPOINT ["tokenusage"]
CMD ["serve"]
