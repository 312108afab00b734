# One image for every Marill process (`marill coordinator|worker|dealer|...`), used by charts/marill.
#   docker build -t marill:0.1.0 .
FROM rust:1-bookworm AS build
# libzmq with CURVE (libsodium) for the encrypted links, found through pkg-config; cmake and the
# toolchain of the base image build the bundled librdkafka (scripts/system-deps.sh).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libzmq3-dev pkg-config cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin marill \
    && install -m 0755 target/release/marill /usr/local/bin/marill

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libzmq5 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 marill \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin marill
COPY --from=build /usr/local/bin/marill /usr/local/bin/marill
USER 10001:10001
ENTRYPOINT ["marill"]
CMD ["--help"]
