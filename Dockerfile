# syntax=docker/dockerfile:1
#
# mcpgate as a container image: built with the official Rust image, run on
# distroless (glibc, CA certificates, nothing else: no shell, no package
# manager) as the non-root user 65532.
#
#   docker build -t mcpgate .
#
# BuildKit's cache mounts keep the crates.io downloads and cargo's target
# directory between builds, so a change to mcpgate's own code recompiles
# mcpgate's crates only.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# The target directory is a cache mount, gone after this step: the binary
# is copied out in the same step. The data directory (and its two
# subdirectories: the broker's keys, the development IdP's state) is made
# here, since the runtime image has no mkdir; the final stage hands it to
# the non-root user.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p mcpgate \
 && install -D -m 0755 target/release/mcpgate /out/bin/mcpgate \
 && install -d -m 0755 /out/var/lib \
 && install -d -m 0700 /out/var/lib/mcpgate /out/var/lib/mcpgate/broker /out/var/lib/mcpgate/idp

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="mcpgate" \
      org.opencontainers.image.description="Secures MCP servers with OAuth 2.1 and Microsoft Entra ID" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bin/mcpgate /usr/local/bin/mcpgate
# Copying /var/lib/mcpgate as an entry of /var/lib keeps its mode (0700)
# along with the new owner. A named volume mounted there starts as a copy
# of it, owner and mode included.
COPY --from=build --chown=65532:65532 /out/var/lib /var/lib
# A container is reached from outside it: listen on every interface.
# serve still refuses plain http off loopback unless --public-url is
# https (TLS at the proxy in front), so a bare `docker run` fails closed.
ENV MCPGATE_DATA_DIR=/var/lib/mcpgate \
    MCPGATE_BIND=0.0.0.0:8080
USER 65532:65532
# 8080: MCP, the metadata, the broker, /healthz, /readyz. 9090: metrics
# (--metrics-bind; keep it off the public network).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/mcpgate"]
CMD ["serve"]
