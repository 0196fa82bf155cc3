# Build, install the PostgreSQL binaries and client tools, and test sdblocal.
# CI runs `make test` through .ci/run.

GO ?= go

# Each recipe runs as one bash script that stops at the first failing command.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.ONESHELL:

BIN := bin/sdblocal

# Directory for `make postgres`. Empty means $SDBLOCAL_PG_DIR when set, else
# the default of `sdblocal postgres fetch`.
PG_DIR ?=
# Extra options for `sdblocal serve` in `make run`.
RUN_FLAGS ?=
# go test -benchtime and -count for `make bench`: iterations per run, and runs.
BENCHTIME ?= 50x
BENCHCOUNT ?= 3

# Client tools the tests run, and the Debian packages that provide them:
# psql, pg_dump and pg_restore come from postgresql-client-15, and pgbench
# (with pg_controldata and pg_waldump) from postgresql-15.
PG_CLIENT_TOOLS := psql pgbench pg_dump pg_restore
PG_APT_PACKAGES := postgresql-client-15 postgresql-15
# The metrics tests check /metrics with promtool and scrape it with a
# Prometheus server; the Debian package prometheus provides both.
PROMETHEUS_TOOLS := promtool prometheus
PROMETHEUS_APT_PACKAGES := prometheus
# Drivers the client tests run besides Go's: psycopg2 for Debian's
# /usr/bin/python3, and pgjdbc run by a Java runtime. node-postgres and
# postgres.js come from npm at test time.
CLIENT_APT_PACKAGES := python3-psycopg2 libpostgresql-jdbc-java default-jre-headless
# PgBouncer, the baseline of the pooling benchmark.
BENCH_APT_PACKAGES := pgbouncer
# Unprivileged user that sdblocal starts the instances as when run as root.
PG_USER := postgres

.PHONY: build postgres tools bench-tools run test bench soak clean

# Build the sdblocal binary into bin/.
build:
	$(GO) build -o $(BIN) ./cmd/sdblocal

# Download the PostgreSQL 14 server binaries; does nothing when already installed.
postgres: build
	$(BIN) postgres fetch $(if $(PG_DIR),--pg-dir '$(PG_DIR)')

# Install the PostgreSQL client tools and Prometheus's tools, and create the
# postgres user if missing (as root).
tools:
	@missing=""
	for tool in $(PG_CLIENT_TOOLS) $(PROMETHEUS_TOOLS); do
		command -v "$$tool" >/dev/null || missing="$$missing $$tool"
	done
	/usr/bin/python3 -c 'import psycopg2' 2>/dev/null || missing="$$missing psycopg2"
	[ -e /usr/share/java/postgresql.jar ] || missing="$$missing pgjdbc"
	command -v java >/dev/null || missing="$$missing java"
	if [ -n "$$missing" ]; then
		if [ "$$(id -u)" -ne 0 ]; then
			echo "Test tools missing:$$missing" >&2
			echo "Install them as root with: apt-get update && apt-get install -y --no-install-recommends $(PG_APT_PACKAGES) $(PROMETHEUS_APT_PACKAGES) $(CLIENT_APT_PACKAGES)" >&2
			exit 1
		fi
		# The postinst of postgresql-15 would otherwise create a cluster and
		# start it on port 5432. The existing file is kept by ucf on install.
		if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
			mkdir -p /etc/postgresql-common
			echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf
		fi
		# A policy-rc.d that exits 101 keeps the postinst of prometheus from
		# starting the packaged server on port 9090; the tests run their own
		# on a loopback port. It is removed again after the install.
		# NOTE: on a systemd host the package still enables its service for
		# the next boot.
		policy=""
		if [ ! -e /usr/sbin/policy-rc.d ]; then
			policy=/usr/sbin/policy-rc.d
			trap 'rm -f "$$policy"' EXIT
			printf '#!/bin/sh\nexit 101\n' > "$$policy"
			chmod 755 "$$policy"
		fi
		echo "Installing$$missing from $(PG_APT_PACKAGES) $(PROMETHEUS_APT_PACKAGES) $(CLIENT_APT_PACKAGES)"
		apt-get update
		DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 \
			apt-get install -y --no-install-recommends $(PG_APT_PACKAGES) $(PROMETHEUS_APT_PACKAGES) $(CLIENT_APT_PACKAGES)
	fi
	# Only root needs the user, because sdblocal started as root runs the
	# instances as this user.
	if [ "$$(id -u)" -eq 0 ] && ! id -u $(PG_USER) >/dev/null 2>&1; then
		echo "Creating system user $(PG_USER)"
		useradd --system --user-group --home-dir /var/lib/sdblocal --shell /usr/sbin/nologin $(PG_USER)
	fi

# Run sdblocal in the foreground with its default data directory.
run: build postgres tools
	$(BIN) serve $(RUN_FLAGS)

# Vet the code and run every test against the real PostgreSQL binaries and client tools.
test: build postgres tools
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

# Install PgBouncer for the pooling benchmark (as root). A policy-rc.d that
# exits 101 keeps its postinst from starting the packaged server on port
# 6432; the benchmark runs its own on a loopback port.
bench-tools:
	@command -v pgbouncer >/dev/null && exit 0
	if [ "$$(id -u)" -ne 0 ]; then
		echo "pgbouncer missing; install it as root with: apt-get update && apt-get install -y --no-install-recommends $(BENCH_APT_PACKAGES)" >&2
		exit 1
	fi
	policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		policy=/usr/sbin/policy-rc.d
		trap 'rm -f "$$policy"' EXIT
		printf '#!/bin/sh\nexit 101\n' > "$$policy"
		chmod 755 "$$policy"
	fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(BENCH_APT_PACKAGES)

# Benchmarks that run once, with their own repetitions inside, and write a
# markdown section of their own for docs/benchmarks.md.
ONCE_BENCHMARKS := ^(BenchmarkPoolComparison|BenchmarkIdleClientMemory)$$

# Run the benchmarks against the real binary and instances, and write their
# figures, the method and the machine to docs/benchmarks.md.
bench: build postgres tools bench-tools
	out=$$(mktemp)
	sections=$$(mktemp)
	$(GO) test -count=$(BENCHCOUNT) -run '^$$' -bench . -skip '$(ONCE_BENCHMARKS)' -benchtime=$(BENCHTIME) ./... | tee "$$out"
	SDBLOCAL_BENCH_REPORT="$$sections" $(GO) test -count=1 -timeout 30m -run '^$$' -bench '$(ONCE_BENCHMARKS)' -benchtime=1x ./cmd/sdblocal
	{
		echo "# Benchmarks"
		echo
		echo "Written by \`make bench\` on $$(date -u +%Y-%m-%d). Each benchmark starts the real"
		echo "\`sdblocal\` binary and PostgreSQL 14 instances and drives them with the pgx driver"
		echo "over TLS on loopback; see \`cmd/sdblocal/bench_test.go\` for what each one times."
		echo "Settings: \`-benchtime=$(BENCHTIME) -count=$(BENCHCOUNT)\`."
		echo
		echo "Machine: $$(nproc) CPUs ($$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)),"
		echo "$$(free -g | awk '/^Mem:/ {print $$2}') GiB memory, $$(uname -sr), $$($(GO) version | cut -d' ' -f3)."
		echo
		echo "| benchmark | ms/op |"
		echo "|---|---|"
		awk '/^Benchmark/ {printf "| %s | %.3f |\n", $$1, $$3 / 1e6}' "$$out"
		echo
		echo "Raw output:"
		echo
		echo '```'
		grep -E '^(goos|goarch|pkg|cpu|Benchmark)' "$$out"
		echo '```'
		echo
		echo "## Wake latency"
		echo
		echo "\`BenchmarkWakeLatency\` (\`cmd/sdblocal/wakebench_test.go\`) runs two cycles per iteration."
		echo "Bare: exec \`bin/postgres\` on a copy of the instance's data directory with sdblocal's"
		echo "settings, poll \`postmaster.pid\` every 1 ms until ready, connect over the Unix socket and"
		echo "run \`SELECT 1\`. Wake: with the instance suspended, the first \`SELECT 1\` on a client"
		echo "connection to the proxy that stayed open, so no TLS handshake or login is included."
		echo "Ready is the instance's share of the wake, as sdblocal logs it: from the wake request to"
		echo "its first backend connection that succeeds. The rest of the wake is the client's own"
		echo "backend connection and the query through the proxy."
		echo "Percentiles are nearest-rank over the iterations of one run; with 50 iterations the 99th"
		echo "percentile is the slowest cycle. Targets: wake p50 at most 1.5 × bare p50, wake p99"
		echo "under 100 ms."
		echo
		echo "| run | wake p50 ms | ready p50 ms | bare p50 ms | p50 ratio | wake p99 ms | ready p99 ms | bare p99 ms | p99 ratio |"
		echo "|---|---|---|---|---|---|---|---|---|"
		awk '/^BenchmarkWakeLatency/ {
			for (i = 3; i < NF; i += 2) v[$$(i + 1)] = $$i
			printf "| %d | %.1f | %.1f | %.1f | %.2f | %.1f | %.1f | %.1f | %.2f |\n", ++n,
				v["wake-p50-ms"], v["ready-p50-ms"], v["bare-p50-ms"], v["p50-ratio"],
				v["wake-p99-ms"], v["ready-p99-ms"], v["bare-p99-ms"], v["p99-ratio"]
		}' "$$out"
		echo
		cat "$$sections"
		echo
		echo "Load average (1, 5, 15 min) when the benchmarks ended: $$(cut -d' ' -f1-3 /proc/loadavg)."
	} > docs/benchmarks.md
	rm -f "$$out" "$$sections"
	echo "Wrote docs/benchmarks.md"

# The reliability tests that `make soak` runs in their long form, and how
# long it runs each fuzz test past its seed corpus (a Go duration).
SOAK_TESTS := ^(TestCrashUnderWriteLoad|TestPostmasterKilledMidQuery|TestGracefulShutdown|TestConnectionStorm|TestIdleClientsAcrossSuspend|TestDiskFullDuringWrites|TestSlowReaderMemoryBounded|TestSlowDripClients|TestHostileMessages|TestHostileAPIRequests)$$
FUZZTIME ?= 1m

# Run the reliability tests with more cycles, clients and time than
# `make test` gives them, then every fuzz test for FUZZTIME. A crash the
# fuzzer finds is written to the package's testdata/fuzz and fails later
# runs until fixed. See docs/reliability.md.
soak: build postgres tools
	SDBLOCAL_SOAK=1 $(GO) test -count=1 -timeout 60m -run '$(SOAK_TESTS)' ./cmd/sdblocal
	for pkg in ./proxy ./auth ./api ./backup; do
		for fuzz in $$($(GO) test -list '^Fuzz' "$$pkg" | grep '^Fuzz'); do
			$(GO) test -run '^$$' -fuzz "^$${fuzz}\$$" -fuzztime $(FUZZTIME) "$$pkg"
		done
	done

# Remove build and coverage output. The PostgreSQL binaries in the cache directory stay.
clean:
	rm -rf bin/ coverage.out coverage.html *.coverprofile
