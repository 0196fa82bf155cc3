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
# Unprivileged user that sdblocal starts the instances as when run as root.
PG_USER := postgres

.PHONY: build postgres tools run test bench clean

# Build the sdblocal binary into bin/.
build:
	$(GO) build -o $(BIN) ./cmd/sdblocal

# Download the PostgreSQL 14 server binaries; does nothing when already installed.
postgres: build
	$(BIN) postgres fetch $(if $(PG_DIR),--pg-dir '$(PG_DIR)')

# Install the PostgreSQL client tools and create the postgres user if missing (as root).
tools:
	@missing=""
	for tool in $(PG_CLIENT_TOOLS); do
		command -v "$$tool" >/dev/null || missing="$$missing $$tool"
	done
	if [ -n "$$missing" ]; then
		if [ "$$(id -u)" -ne 0 ]; then
			echo "PostgreSQL client tools missing:$$missing" >&2
			echo "Install them as root with: apt-get update && apt-get install -y --no-install-recommends $(PG_APT_PACKAGES)" >&2
			exit 1
		fi
		# The postinst of postgresql-15 would otherwise create a cluster and
		# start it on port 5432. The existing file is kept by ucf on install.
		if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
			mkdir -p /etc/postgresql-common
			echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf
		fi
		echo "Installing$$missing from $(PG_APT_PACKAGES)"
		apt-get update
		DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 \
			apt-get install -y --no-install-recommends $(PG_APT_PACKAGES)
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

# Run the benchmarks against the real binary and instances, and write their
# figures, the method and the machine to docs/benchmarks.md.
bench: build postgres tools
	out=$$(mktemp)
	$(GO) test -count=$(BENCHCOUNT) -run '^$$' -bench . -benchtime=$(BENCHTIME) ./... | tee "$$out"
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
	} > docs/benchmarks.md
	rm -f "$$out"
	echo "Wrote docs/benchmarks.md"

# Remove build and coverage output. The PostgreSQL binaries in the cache directory stay.
clean:
	rm -rf bin/ coverage.out coverage.html *.coverprofile
