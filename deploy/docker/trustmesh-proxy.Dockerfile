# syntax=docker/dockerfile:1
# The sidecar, `trustmesh-proxy`, and its init step (`trustmesh-proxy init`, which runs
# iptables): one image, as the injector puts the same image into the init container and the
# sidecar. Build from the repository root:
#   docker build -f deploy/docker/trustmesh-proxy.Dockerfile -t trustmesh/proxy:0.1.0 .
# With a binary built beforehand (`cargo build --profile dist -p trustmesh-proxy`), the
# `build` stage can be replaced by that folder (what deploy/images.sh does, with no registry):
#   podman build --build-context build=target/dist -f deploy/docker/trustmesh-proxy.Dockerfile ...
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p trustmesh-proxy \
 && install -m 0755 target/dist/trustmesh-proxy /trustmesh-proxy

# The runtime's root, collected from Debian: the binary, the shared libraries `ldd` names for
# it (glibc, libgcc_s), and iptables-nft with its libraries and extensions for `init`.
FROM debian:bookworm-slim AS rootfs
RUN command -v xtables-nft-multi >/dev/null \
 || { apt-get update && apt-get install -y --no-install-recommends iptables \
      && rm -rf /var/lib/apt/lists/*; }
COPY --from=build /trustmesh-proxy /rootfs/usr/local/bin/trustmesh-proxy
RUN set -eu; \
    xt="$(command -v xtables-nft-multi)"; \
    ext="$(dirname "$(find /usr/lib -name libxt_REDIRECT.so -print -quit)")"; \
    install -D -m 0755 "$xt" /rootfs/usr/sbin/xtables-nft-multi; \
    for tool in iptables ip6tables; do ln -s xtables-nft-multi "/rootfs/usr/sbin/$tool"; done; \
    cp -a --parents "$ext" /rootfs; \
    for f in /rootfs/usr/local/bin/trustmesh-proxy "$xt" "$ext"/*.so; do ldd "$f"; done \
      | grep -o '/[^ ]*' | sort -u | while read -r lib; do cp --parents -L "$lib" /rootfs; done; \
    mkdir -p /rootfs/etc; \
    printf 'root:x:0:0::/:/nonexistent\ntrustmesh-proxy:x:1337:1337::/:/nonexistent\n' > /rootfs/etc/passwd; \
    printf 'root:x:0:\ntrustmesh-proxy:x:1337:\n' > /rootfs/etc/group; \
    if [ -f /etc/protocols ]; then cp /etc/protocols /rootfs/etc/; fi; \
    install -d -m 0700 -o 1337 -g 1337 /rootfs/var/lib/trustmesh-proxy

# No shell, no package manager: the binary, its libraries and iptables.
FROM scratch
COPY --from=rootfs /rootfs/ /
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin
# The sidecar runs as 1337, the uid `init` exempts from redirection. The init step is run
# as root with NET_ADMIN and NET_RAW (`user: root` in compose, the injector's securityContext
# in Kubernetes). /var/lib/trustmesh-proxy is where a volume for --state-dir goes (a new named
# volume takes this folder's owner and mode).
USER 1337:1337
EXPOSE 15006 15020
ENTRYPOINT ["/usr/local/bin/trustmesh-proxy"]
