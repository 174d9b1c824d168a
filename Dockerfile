# The weir image the Helm chart runs: built with the `dist` profile (fat LTO), run as a
# non-root user from a distroless base (glibc, CA certificates, nothing else).
#
#   docker build -t ghcr.io/weir-dev/weir:0.1.0 .

FROM rust:1-bookworm AS build
# Pingora's zlib-ng needs cmake; ring and zstd need a C compiler (in the rust image already).
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --profile dist -p weir-proxy --bin weir \
    && cp target/dist/weir /weir

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /weir /usr/local/bin/weir
# 65532 = the distroless "nonroot" user; the chart sets the same ids and a read-only root.
USER 65532:65532
EXPOSE 8080 8443 9911
ENTRYPOINT ["/usr/local/bin/weir"]
