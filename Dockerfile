# syntax=docker/dockerfile:1
#
# pingscope container image: a Rust build stage and a small Debian runtime.
#
#   docker build -t pingscope .
#   docker run --sysctl net.ipv4.ping_group_range="0 2147483647" -p 10060:10060 pingscope
#
# ICMP without privileges: pingscope opens unprivileged ICMP datagram sockets, which the
# kernel allows for the groups in net.ipv4.ping_group_range (it also covers IPv6). Set
# that sysctl on the container (docker-compose.yml does) and no capability is needed.
# Without it, grant CAP_NET_RAW instead (`cap_add: [NET_RAW]`) for raw sockets.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# The whole package (filtered by .dockerignore): Cargo checks every target the manifest
# names, even when building one binary.
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied out
# because the target cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pingscope \
 && install -D -m 0755 target/release/pingscope /out/pingscope

FROM ${RUNTIME_IMAGE}
ARG PINGSCOPE_UID=10060
# A fixed non-root uid/gid, so that the /data volume can be prepared on the host.
RUN groupadd --system --gid ${PINGSCOPE_UID} pingscope \
 && useradd --system --uid ${PINGSCOPE_UID} --gid pingscope --home-dir /data --shell /usr/sbin/nologin pingscope \
 && install -d -o pingscope -g pingscope -m 0750 /data /etc/pingscope
COPY --from=builder /out/pingscope /usr/local/bin/pingscope

USER pingscope:pingscope
# The sessions database (SQLite, WAL) lives in the /data volume: working from / makes the
# default relative path `data/pingscope.db` land there.
WORKDIR /
VOLUME ["/data"]
EXPOSE 10060

# Liveness without curl in the image: bash's /dev/tcp asks /-/healthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/10060 && printf 'GET /-/healthy HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200'"]

ENTRYPOINT ["/usr/local/bin/pingscope"]
CMD ["serve", "--web.listen-address=0.0.0.0:10060"]
