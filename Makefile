# shardgate developer targets. `make` alone lists them.
GO          ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
GOFMT       ?= $(shell $(GO) env GOROOT)/bin/gofmt
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEV_FLAGS   ?=
LOADTEST_FLAGS ?=
UPDATE      ?=
COMPAT_FLAGS ?=
BASELINE    ?=
FUZZTIME    ?= 60s

.DEFAULT_GOAL := help
.PHONY: help build test difftest dev lint fuzz bench perf-check perf-ab loadtest soak compat compose-check clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

build: ## build bin/shardgate (cgo: needs gcc)
	$(GO) build -buildvcs=auto -o bin/shardgate ./cmd/shardgate

test: ## go vet, then the whole suite with -race (needs PostgreSQL 15; see .ci/run)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

difftest: ## 10,000 random queries through shardgate (3 shards) and on one Postgres, same answers required (~3 min; needs PostgreSQL 15)
	SHARDGATE_RANDOM_QUERIES=10000 $(GO) test -count=1 -timeout 20m -run '^TestRandomQueries$$' -v ./proxy/

dev: build ## run a local sandbox behind the proxy, e.g. make dev DEV_FLAGS="--shards 3"
	./bin/shardgate dev $(DEV_FLAGS)

lint: ## gofmt, go vet, staticcheck
	@out=$$(find . -path './.*' -prune -o -path ./bin -prune -o -name '*.go' -print | xargs -r $(GOFMT) -l) || exit 1; \
	  if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

fuzz: ## run every Go fuzz target for FUZZTIME each (default 60s); a crasher lands in its package's testdata/fuzz
	@set -e; for dir in $$($(GO) list -f '{{.Dir}}' ./...); do \
	  for target in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | cut -d' ' -f2); do \
	    echo "--- fuzz $$target ($${dir#$(CURDIR)/}) for $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10s $$dir; \
	  done; \
	done

bench: build ## pgbench: direct Postgres vs PgBouncer vs shardgate at 1 and the default workers (1 shard), ~7 min; writes bench/results/latest.md
	GO=$(GO) bash bench/run.sh

perf-check: build ## performance budget (<2 min): shardgate vs direct Postgres and router benchmarks against bench/budget.yaml
	$(GO) run ./bench/perfcheck -budget bench/budget.yaml -bin bin/shardgate -go $(GO)

perf-ab: build ## A/B in one run (~2 min): bin/shardgate vs an old binary, e.g. make perf-ab BASELINE=/tmp/old-shardgate
	@test -n "$(BASELINE)" || { echo "perf-ab: set BASELINE to the old shardgate binary, e.g. make perf-ab BASELINE=/tmp/old-shardgate"; exit 2; }
	$(GO) run ./bench/perfcheck -budget bench/budget.yaml -bin bin/shardgate -baseline $(BASELINE) -skip-micro

loadtest: build ## social-app load test on a 2-shard sandbox, ~3 min; writes bench/out/loadtest/loadtest.md and .svg (ignored); UPDATE=1 writes the committed bench/results/ instead
	$(GO) run ./bench/loadtest $(if $(filter 1 yes true,$(UPDATE)),-out bench/results) $(LOADTEST_FLAGS)

soak: build ## hostile clients, faults and churn against a bin/shardgate process, ~4 min; fails on leaks or errors; writes bench/results/soak.md
	$(GO) run ./bench/soak -bin bin/shardgate $(SOAK_FLAGS)

compat: ## pgx v5 test suite, psycopg 3 scenarios and pgbench (-i -s 10, -T 30) direct vs through shardgate (session, transaction), ~17 min; writes bench/results/compat.md; e.g. COMPAT_FLAGS="-packages none" (psycopg + pgbench only, ~2 min)
	$(GO) run ./bench/compat -go $(GO) $(COMPAT_FLAGS)

compose-check: ## validate docker-compose.yml
	docker-compose config -q

clean: ## remove build output
	rm -rf bin
