# Three stages:
#   build    compiles bin/shardgate (cgo: pg_query_go needs gcc, which the golang image has)
#   test     the repo plus PostgreSQL 15, psycopg 2 and 3 and pgbouncer; CMD runs `make test`,
#            the same suite as locally (it starts its own clusters, as the postgres OS user)
#   runtime  (default) debian:bookworm-slim with the binary and PostgreSQL 15 for `shardgate dev`
# docker build --target test -t shardgate-test . && docker run --rm shardgate-test

FROM golang:1.26-bookworm AS build
ARG VERSION=
ENV CGO_ENABLED=1
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -trimpath -ldflags "-X github.com/shardgate/shardgate/proxy.release=${VERSION}" -o bin/shardgate ./cmd/shardgate

FROM golang:1.26-bookworm AS test
ENV CGO_ENABLED=1 PATH=/usr/lib/postgresql/15/bin:$PATH
# create_main_cluster = false: the package need not initdb a cluster nobody uses.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/shardgate.conf \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      postgresql-15 postgresql-client-15 python3-psycopg2 python3-psycopg pgbouncer \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Warm the build cache (pg_query's C code takes ~40 s to compile) so `make test` starts quickly.
RUN go vet ./... && go build -race ./...
CMD ["make", "test"]

FROM debian:bookworm-slim AS runtime
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/shardgate.conf \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates postgresql-15 postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres /var/lib/shardgate
COPY --from=build /src/bin/shardgate /usr/local/bin/shardgate
ENV PATH=/usr/lib/postgresql/15/bin:$PATH
# Run as postgres: `serve` needs no privileges, and `shardgate dev` can then run its clusters directly
# (in a container, give dev --listen 0.0.0.0:6432 to reach it from outside).
USER postgres
WORKDIR /var/lib/shardgate
EXPOSE 6432
ENTRYPOINT ["shardgate"]
CMD ["--help"]
