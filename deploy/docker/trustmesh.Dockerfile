# syntax=docker/dockerfile:1
# The control plane, `trustmesh`. Build from the repository root:
#   docker build -f deploy/docker/trustmesh.Dockerfile -t trustmesh/control-plane:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p trustmesh-control-plane \
 && install -m 0755 target/release/trustmesh /trustmesh

# Minimal runtime: Debian slim (a shell, so that `trustmesh token create` can write files in
# one-shot jobs), no compiler, an unprivileged user, nothing else.
FROM debian:bookworm-slim
RUN groupadd --gid 10001 trustmesh \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/trustmesh --create-home --shell /usr/sbin/nologin trustmesh
COPY --from=build /trustmesh /usr/local/bin/trustmesh
USER 10001:10001
WORKDIR /var/lib/trustmesh
EXPOSE 15012
ENTRYPOINT ["/usr/local/bin/trustmesh"]
CMD ["serve", "--listen", "0.0.0.0:15012", "--data-dir", "/var/lib/trustmesh", "--policies", "/policies"]
