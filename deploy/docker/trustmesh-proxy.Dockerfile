# syntax=docker/dockerfile:1
# The sidecar, `trustmesh-proxy`, and its init step (`trustmesh-proxy init`, which needs
# iptables). Build from the repository root:
#   docker build -f deploy/docker/trustmesh-proxy.Dockerfile -t trustmesh/proxy:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p trustmesh-proxy \
 && install -m 0755 target/release/trustmesh-proxy /trustmesh-proxy

FROM debian:bookworm-slim
# iptables for `init` only; the sidecar itself never calls it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1337 trustmesh-proxy \
 && useradd --uid 1337 --gid 1337 --no-create-home --shell /usr/sbin/nologin trustmesh-proxy \
 && install -d -m 0700 -o 1337 -g 1337 /var/lib/trustmesh-proxy
COPY --from=build /trustmesh-proxy /usr/local/bin/trustmesh-proxy
# The sidecar runs as 1337, the uid `init` exempts from redirection. The init step is run
# as root with NET_ADMIN and NET_RAW (`user: root` in compose, the injector's securityContext
# in Kubernetes). /var/lib/trustmesh-proxy is where a volume for --state-dir goes (a new named
# volume takes this folder's owner and mode).
USER 1337:1337
EXPOSE 15006 15020
ENTRYPOINT ["/usr/local/bin/trustmesh-proxy"]
