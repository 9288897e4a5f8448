# presenced in a container: a multi-stage build, running as a non-root user.
# Not built in this project's CI (its machines cannot run Docker); kept deliberately simple.
#
#   docker build -t presenced .
#   docker run -p 8080:8080 -v presenced-data:/var/lib/presenced presenced
#
# The image listens on 0.0.0.0:8080 and keeps its state in /var/lib/presenced. Mount a configuration at
# /etc/presenced/presenced.toml (PRESENCED_CONFIG) or set keys with PRESENCED_* variables.

FROM rust:1-bookworm AS build
# SQLite is compiled from source with the server (rusqlite's bundled build): no system package needed.
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p presenced --bin presenced

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/presenced --create-home presenced
COPY --from=build /src/target/release/presenced /usr/local/bin/presenced
USER presenced
ENV PRESENCED_LISTEN=0.0.0.0:8080 \
    PRESENCED_DATA_DIR=/var/lib/presenced \
    PRESENCED_LOG_FORMAT=json
VOLUME /var/lib/presenced
EXPOSE 8080
# Probes: GET /healthz (process up) and GET /readyz (store reachable, recovery done).
ENTRYPOINT ["presenced"]
CMD ["serve"]
