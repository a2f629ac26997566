# syntax=docker/dockerfile:1
# The control plane, `trustmesh`. Build from the repository root:
#   docker build -f deploy/docker/trustmesh.Dockerfile -t trustmesh/control-plane:0.1.0 .
#   docker build -f deploy/docker/trustmesh.Dockerfile --target tools -t trustmesh/tools:0.1.0 .
# With a binary built beforehand (`cargo build --profile dist -p trustmesh-control-plane`), the
# `build` stage can be replaced by that folder (what deploy/images.sh does, with no registry):
#   podman build --build-context build=target/dist -f deploy/docker/trustmesh.Dockerfile ...
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p trustmesh-control-plane \
 && install -m 0755 target/dist/trustmesh /trustmesh

# The runtime's root, collected from Debian: the binary, the shared libraries `ldd` names for
# it (glibc, libgcc_s), the user and its data folder. No git: a policy checkout's version is
# then its content hash (`sha256:...`) rather than its commit.
FROM debian:bookworm-slim AS rootfs
COPY --from=build /trustmesh /rootfs/usr/local/bin/trustmesh
RUN set -eu; \
    ldd /rootfs/usr/local/bin/trustmesh | grep -o '/[^ ]*' | sort -u \
      | while read -r lib; do cp --parents -L "$lib" /rootfs; done; \
    mkdir -p /rootfs/etc /rootfs/policies; \
    printf 'root:x:0:0::/:/nonexistent\ntrustmesh:x:10001:10001::/var/lib/trustmesh:/nonexistent\n' > /rootfs/etc/passwd; \
    printf 'root:x:0:\ntrustmesh:x:10001:\n' > /rootfs/etc/group; \
    install -d -m 0700 -o 10001 -g 10001 /rootfs/var/lib/trustmesh

# One-shot admin jobs that write files (`trustmesh token create > FILE`, as the compose
# example's `bootstrap`): the binary on Debian slim, with a shell. Not the runtime image.
FROM debian:bookworm-slim AS tools
COPY --from=build /trustmesh /usr/local/bin/trustmesh
ENTRYPOINT ["/usr/local/bin/trustmesh"]

# The runtime (the default target): no shell, no package manager, non-root.
FROM scratch
COPY --from=rootfs /rootfs/ /
USER 10001:10001
WORKDIR /var/lib/trustmesh
EXPOSE 15012
ENTRYPOINT ["/usr/local/bin/trustmesh"]
CMD ["serve", "--listen", "0.0.0.0:15012", "--data-dir", "/var/lib/trustmesh", "--policies", "/policies"]
