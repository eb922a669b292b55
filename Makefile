# strata — build database guest images, run the agent inside them, run the
# controller that manages them. `make help` lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Everything downloaded or built once and reused lives here: Debian packages,
# cached root filesystems and phase snapshots, finished images, tools.
CACHE_DIR ?= $(HOME)/.cache/strata
# Finished images and their manifests.
OUT_DIR   ?= $(CURDIR)/out
# The recipe `make image` builds.
RECIPE    ?= images/mariadb-10.11.yaml

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
GO      ?= go
export CGO_ENABLED := 0

.PHONY: help
help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_.-]+:.*## /{printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "  Variables: CACHE_DIR=$(CACHE_DIR) OUT_DIR=$(OUT_DIR) RECIPE=$(RECIPE)"

# Every target that compiles checks Go first, before it installs anything:
# missing or older than go.mod asks, it stops with what to install.
.PHONY: go-check
go-check: ## check that Go (GO) is at least the version go.mod asks for, and say what to install when not
	@ci/go-check.sh '$(GO)'

.PHONY: build
build: go-check ## build bin/strata (and bin/disk-image-create, a link to it), bin/strata-agent and bin/packer-plugin-strata
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/strata .
	ln -sfn strata bin/disk-image-create
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/strata-agent ./agent/cmd/strata-agent
	$(GO) build -trimpath -ldflags '-s -w -X main.commit=$(COMMIT)' -o bin/packer-plugin-strata ./builder/packer/cmd/packer-plugin-strata

.PHONY: deps
deps: ## install the Debian packages the builder needs (apt, as root)
	ci/deps.sh build boot

.PHONY: image
image: go-check deps build ## build the default guest image ($(RECIPE)) into $(OUT_DIR)
	bin/strata build -f '$(RECIPE)' --image-cache '$(CACHE_DIR)' -o '$(OUT_DIR)/$(IMAGE_NAME)'

IMAGE_NAME = $(basename $(notdir $(RECIPE)))

.PHONY: boot-test
boot-test: go-check deps build ## boot $(OUT_DIR)/<recipe>.qcow2 (make image first): the agent must enroll and prepare, or a login prompt for images without one
	if grep -q '^datastore:' '$(RECIPE)'; then \
		bin/strata boot-test '$(OUT_DIR)/$(IMAGE_NAME).qcow2' --agent; \
	else \
		bin/strata boot-test '$(OUT_DIR)/$(IMAGE_NAME).qcow2' --expect 'login:'; \
	fi

.PHONY: publish
publish: build ## publish $(OUT_DIR)/<recipe>.qcow2 to Glance and register its datastore version (credentials: OS_* or OS_CLOUD; TROVE_URL also registers in a Trove)
	bin/strata image publish '$(RECIPE)' --image '$(OUT_DIR)/$(IMAGE_NAME).qcow2' $(if $(TROVE_URL),--trove-url '$(TROVE_URL)')

# Every test's temporary files (and so every VM's disks) go here, one
# directory per checkout: a qemu whose command line names it after the
# tests is one a test left behind, and fails `make test`
# (ci/no-qemu-left.sh). Under /tmp: servers the tests run as their own
# accounts (postgres) must reach it, and unix socket paths stay short.
TEST_TMPDIR ?= /tmp/strata-test-$(shell printf %s '$(CURDIR)' | sha256sum | cut -c1-8)

.PHONY: test
test: go-check deps build ## install what the tests need, then run every test (shellcheck, unit, real servers, the set-up on a fresh Debian root, one image built and booted, the chaos test)
	ci/deps.sh test openstack swift dib
	@mkdir -p '$(TEST_TMPDIR)'
	TMPDIR='$(TEST_TMPDIR)' $(MAKE) test-all || { ci/no-qemu-left.sh '$(TEST_TMPDIR)'; exit 1; }
	ci/no-qemu-left.sh '$(TEST_TMPDIR)'

.PHONY: test-all
test-all:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./ci/e2e/
	$(GO) vet -tags openstack ./builder/publish/ ./controller/imagestore/glance/
	$(GO) vet -tags 'e2e packer' ./ci/e2e/
	$(GO) vet -tags freshhost ./ci/freshhost/
	@files=$$(git ls-files '*.go') && [ -n "$$files" ] || { echo "make: cannot list the Go files to check with gofmt (git ls-files)"; exit 1; }; \
		bad=$$(gofmt -l $$files) || exit 1; \
		test -z "$$bad" || { echo "gofmt needed:"; echo "$$bad"; exit 1; }
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 30m ./agent/... ./controller/... ./builder/publish/...
	pkgs=$$($(GO) list ./builder/...) && $(GO) test -count=1 -timeout 30m $$(echo "$$pkgs" | grep -v /builder/publish) . ./ci/
	$(MAKE) test-fresh-host
	$(MAKE) e2e DATASTORE=none
	$(MAKE) test-chaos
	$(MAKE) test-packer

.PHONY: shellcheck
shellcheck: go-check ## shellcheck every shell script of the repository (found by shebang; elements' hooks too) and ci/shlint's checks (part of make test)
	$(GO) test -count=1 -run 'Script' ./ci/ ./builder/build/

# The targets whose ci/deps.sh lines make test-fresh-host runs on the fresh
# root (all the groups the README's two commands install).
FRESH_HOST_TARGETS ?= image test

.PHONY: test-fresh-host
test-fresh-host: go-check deps ## the README's set-up ($(FRESH_HOST_TARGETS)) on a fresh Debian 12 root made by mmdebstrap: first run installs every group and builds, a second installs nothing, apt failures are named (minutes; part of make test)
	@mkdir -p '$(OUT_DIR)'
	STRATA_CACHE_DIR='$(CACHE_DIR)' STRATA_FRESH_HOST_LOGS='$(OUT_DIR)/fresh-host' STRATA_FRESH_HOST_TARGETS='$(FRESH_HOST_TARGETS)' $(GO) test -tags freshhost -count=1 -v -timeout 40m ./ci/freshhost/ 2>&1 | tee '$(OUT_DIR)/test-fresh-host.log' | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)' ; exit $${PIPESTATUS[0]}

.PHONY: test-openstack
test-openstack: go-check build ## publishing against Debian's keystone, glance-api and trove-api on 127.0.0.1 (installs them), incl. the MariaDB image (make image)
	ci/deps.sh build boot openstack
	$(MAKE) image
	STRATA_MARIADB_IMAGE='$(OUT_DIR)/mariadb-10.11.qcow2' CGO_ENABLED=1 $(GO) test -tags openstack -race -count=1 -p 1 -v -timeout 20m \
		./builder/publish/ ./controller/imagestore/glance/ ./controller/compute/nova/ 2>&1 | tee '$(OUT_DIR)/test-openstack.log' \
		| grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)' ; exit $${PIPESTATUS[0]}

.PHONY: record-nova-fixtures
record-nova-fixtures: go-check ## re-record the Nova driver's recorded answers (controller/compute/nova/testdata/) from a real Nova, Cinder and Neutron (starts keystone, glance and the compute tier, or uses the running ones STRATA_OPENSTACK_STATE names; root); git diff then shows what the services answer differently
	ci/deps.sh openstack nova
	STRATA_RECORD_FIXTURES=1 $(GO) test -tags openstack -count=1 -p 1 -v -timeout 20m -run '^TestRecordFixtures$$' ./controller/compute/nova/ 2>&1 \
		| grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)' ; exit $${PIPESTATUS[0]}

# The servers of the trixie versions (images/mariadb-11.8.yaml,
# postgresql-17.yaml, redis-8.yaml), in a trixie root ci/debian-root.sh
# makes once under CACHE_DIR; ci/test-in-root.sh runs a datastore
# package's tests inside it against them.
TRIXIE_SERVER_PACKAGES ?= mount mariadb-server mariadb-client mariadb-backup postgresql-17 postgresql-client-17 redis-server redis-tools
TRIXIE_DATASTORES = mariadb postgresql redis

.PHONY: verify-rules-trixie
verify-rules-trixie: go-check ## the trixie versions' validation rules and default templates checked against trixie's real servers (in a cached trixie root, as root; about 1 minute warm, 3 more the first time)
	ci/deps.sh build
	root=$$(CACHE_DIR='$(CACHE_DIR)' ci/debian-root.sh trixie $(TRIXIE_SERVER_PACKAGES)) && \
	for ds in $(TRIXIE_DATASTORES); do \
		echo "$$ds: rules and template against trixie's server"; \
		GO='$(GO)' ci/test-in-root.sh "$$root" ./agent/datastore/$$ds/ -test.timeout=10m -test.run 'TestRules|TestRecipe' || exit 1; \
	done

.PHONY: test-trixie-agent
test-trixie-agent: go-check ## every test of the agent's MariaDB, PostgreSQL and Redis managers against trixie's servers (in the cached trixie root, as root; minutes)
	ci/deps.sh build
	root=$$(CACHE_DIR='$(CACHE_DIR)' ci/debian-root.sh trixie $(TRIXIE_SERVER_PACKAGES)) && \
	for ds in $(TRIXIE_DATASTORES); do \
		echo "$$ds: every manager test against trixie's server"; \
		GO='$(GO)' ci/test-in-root.sh "$$root" ./agent/datastore/$$ds/ -test.timeout=30m || exit 1; \
	done

# The datastore `make e2e` runs through the API besides MariaDB (which the
# controller's own end-to-end test covers): redis, postgresql, mariadb, all,
# or none (make test: the datastore matrix is make e2e-all's).
# The Nova test runs in make e2e-nova only (it needs the compute tier).
DATASTORE ?= redis
E2E_SKIP = Chaos|TestMariaDBInstanceOnRealNova$(if $(filter none,$(DATASTORE)),|TestEachDatastoreImage)$(if $(filter none mariadb,$(DATASTORE)),|TestReplicasOfPostgreSQLAndRedis)

.PHONY: e2e
e2e: go-check deps build ## end-to-end: images built by bin/strata, booted under qemu; the controller with MariaDB and DATASTORE=$(DATASTORE) (make test: none); backups, replicas (switchover, detach), flavor resize and upgrade to 11.8 (a rebuild onto a new agent) of MariaDB instances; DIB's elements through disk-image-create (minutes)
	ci/deps.sh test dib
	@mkdir -p '$(OUT_DIR)'
	STRATA_CACHE_DIR='$(CACHE_DIR)' STRATA_E2E_DATASTORES='$(DATASTORE)' $(GO) test -tags e2e -count=1 -v -timeout 80m -skip '$(E2E_SKIP)' ./ci/e2e/ 2>&1 | tee '$(OUT_DIR)/e2e.log' | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)' ; exit $${PIPESTATUS[0]}

.PHONY: e2e-all
e2e-all: ## end-to-end with every datastore (mariadb, postgresql, redis) through the API, backups and restores of each included, PostgreSQL and Redis replicas (create, follow, switchover), the MariaDB replicas' network cut for a minute, rebuild and automatic failover, the plain rebuild of a MariaDB instance (a new image of its version) and a failed one rolled back before its upgrade, the whole DIB compatibility suite (Debian 13, UEFI boot), the long chaos test, the replication chaos test, the MariaDB instance on a real Nova (e2e-nova), then Trove's own test suite (test-tempest)
	STRATA_E2E_BACKUP_DATASTORES=all $(MAKE) e2e DATASTORE=all
	$(MAKE) test-chaos-long
	$(MAKE) test-chaos-replication
	$(MAKE) e2e-nova
	$(MAKE) test-tempest

# The MariaDB image on the compute tier of ci/openstack (Nova, Cinder,
# Neutron; root): published to its Glance, an instance through the Trove
# API of a controller in OpenStack mode (--compute nova), booted by Nova
# under TCG, written and read by the host's mariadb client, deleted with
# nothing left. Installs the stack (ci/deps.sh openstack nova).
.PHONY: e2e-nova
e2e-nova: go-check deps build ## end-to-end on a real Nova: the MariaDB image published to the private OpenStack's Glance, an instance created through the Trove API with --compute nova, the controller killed (SIGKILL) while Nova builds it and started again, ACTIVE with one server, resized to strata.medium (Nova resize), written and read at its Neutron address, deleted with nothing left in Nova, Cinder, Neutron (root; 10-25 minutes)
	ci/deps.sh test openstack nova
	$(MAKE) image
	@mkdir -p '$(OUT_DIR)'
	STRATA_OPENSTACK_COMPUTE=1 STRATA_CACHE_DIR='$(CACHE_DIR)' STRATA_MARIADB_IMAGE='$(OUT_DIR)/mariadb-10.11.qcow2' $(GO) test -tags e2e -count=1 -v -timeout 45m -run '^TestMariaDBInstanceOnRealNova$$' ./ci/e2e/ 2>&1 | tee '$(OUT_DIR)/e2e-nova.log' | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)|FIGURE' ; exit $${PIPESTATUS[0]}

# The chaos tests kill the controller, an instance's qemu and its agent at
# named points (STRATA_CHAOS) through MariaDB instance lifecycles, on the
# image `make image` builds; they print their counts as CHAOS lines.
.PHONY: test-chaos
test-chaos: deps image ## chaos, short form: one instance, SQLite, each of controller/qemu/agent killed before enrolment, in prepare, an operation, a resize, delete; write probe (capped at 10 minutes)
	ci/deps.sh test
	@mkdir -p '$(OUT_DIR)'
	STRATA_CACHE_DIR='$(CACHE_DIR)' STRATA_MARIADB_IMAGE='$(OUT_DIR)/mariadb-10.11.qcow2' $(GO) test -tags e2e -count=1 -v -timeout 10m -run 'TestChaosShort' ./ci/e2e/ 2>&1 | tee '$(OUT_DIR)/test-chaos.log' | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)|CHAOS|FIGURE' ; exit $${PIPESTATUS[0]}

# CHAOS_LIFECYCLES per store; STRATA_CHAOS_SEED=<seed> replays a run.
CHAOS_LIFECYCLES ?= 20

.PHONY: test-chaos-long
test-chaos-long: deps image ## chaos, long form: CHAOS_LIFECYCLES (20) lifecycles at random named points, on SQLite and PostgreSQL (hours; STRATA_CHAOS_SEED replays)
	ci/deps.sh test
	@mkdir -p '$(OUT_DIR)'
	STRATA_CACHE_DIR='$(CACHE_DIR)' STRATA_MARIADB_IMAGE='$(OUT_DIR)/mariadb-10.11.qcow2' STRATA_CHAOS_LIFECYCLES='$(CHAOS_LIFECYCLES)' $(GO) test -tags e2e -count=1 -v -timeout 600m -run 'TestChaosLong' ./ci/e2e/ 2>&1 | tee '$(OUT_DIR)/test-chaos-long.log' | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)|CHAOS|FIGURE' ; exit $${PIPESTATUS[0]}

# The datastores make test-chaos-replication runs: all, or a comma list
# of mariadb, postgresql, redis.
CHAOS_REPLICATION ?= all

.PHONY: test-chaos-replication
test-chaos-replication: deps image ## chaos, replication, for each of CHAOS_REPLICATION (all: mariadb, postgresql, redis): a primary and two replicas; the controller killed inside two switchovers and two failovers of a frozen source (at promote.fenced and promote.promoted); exactly one member takes writes after each, nothing lost (10-20 minutes each)
	ci/deps.sh test
	@mkdir -p '$(OUT_DIR)'
	STRATA_CACHE_DIR='$(CACHE_DIR)' STRATA_MARIADB_IMAGE='$(OUT_DIR)/mariadb-10.11.qcow2' STRATA_E2E_DATASTORES='$(CHAOS_REPLICATION)' $(GO) test -tags e2e -count=1 -v -timeout 150m -run '^TestChaosReplication$$' ./ci/e2e/ 2>&1 | tee '$(OUT_DIR)/test-chaos-replication.log' | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)|CHAOS|FIGURE' ; exit $${PIPESTATUS[0]}

# Test classes trove-tempest-plugin runs at once (each boots VMs), and which
# of its tests run (e.g. TestInstanceBasicMariaDB: one class, one VM).
TEMPEST_CONCURRENCY ?= 2
TEMPEST_REGEX ?= trove_tempest_plugin

.PHONY: test-tempest
test-tempest: go-check deps build ## Trove's own test suite, Debian's trove-tempest-plugin unmodified, against a controller with the MariaDB and PostgreSQL images; prints its table, fails on a failure not in ci/tempest/expected-failures.txt (tens of minutes)
	ci/deps.sh tempest
	$(MAKE) image RECIPE=images/mariadb-10.11.yaml
	$(MAKE) image RECIPE=images/postgresql-15.yaml
	@mkdir -p '$(OUT_DIR)'
	STRATA='$(CURDIR)/bin/strata' OUT_DIR='$(OUT_DIR)' TEMPEST_CONCURRENCY='$(TEMPEST_CONCURRENCY)' TEMPEST_REGEX='$(TEMPEST_REGEX)' \
		ci/tempest/run.sh '$(OUT_DIR)/tempest' 2>&1 | tee '$(OUT_DIR)/test-tempest.log' ; exit $${PIPESTATUS[0]}

.PHONY: bench
bench: go-check deps build ## benchmarks: cold/warm/unchanged build seconds, qcow2 MB, boot-to-marker seconds
	ci/bench/build.sh

.PHONY: bench-objectstore
bench-objectstore: go-check ## backup format: encrypt+segment and verify MB/s in memory; 2 GiB through the format into a private Swift and back (MB/s, peak RSS)
	ci/deps.sh swift
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./controller/backups/format/

# The dataset size of make bench-backup, in MiB.
BENCH_BACKUP_MB ?= 1024

.PHONY: bench-backup
bench-backup: go-check ## backup and restore of a BENCH_BACKUP_MB MariaDB dataset: strata vs Trove's pipeline (mariadb-backup | gzip | openssl) on one server and store: MB/s, bytes stored, peak RSS; then the same figures for PostgreSQL and Redis (strata only)
	ci/deps.sh test
	BENCH_BACKUP_MB=$(BENCH_BACKUP_MB) $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 60m -v ./ci/bench/backup/ 2>&1 | grep -E 'FIGURE|dataset|Benchmark|ok|FAIL|\s+\S+_test.go'; exit $${PIPESTATUS[0]}

.PHONY: bench-backup-vm
bench-backup-vm: deps build ## the MariaDB backup end to end under qemu with a BENCH_BACKUP_MB dataset: backup MB/s through the API, restore to ACTIVE (minutes)
	ci/deps.sh test
	@mkdir -p $(OUT_DIR)
	STRATA_CACHE_DIR=$(CACHE_DIR) STRATA_E2E_BACKUP_MB=$(BENCH_BACKUP_MB) $(GO) test -tags e2e -count=1 -v -timeout 120m \
		-run TestBackupsRestoreIntoNewInstancesWithExactlyTheirData ./ci/e2e/ 2>&1 | tee $(OUT_DIR)/bench-backup-vm.log | grep -E 'FIGURE|--- |ok|FAIL'; exit $${PIPESTATUS[0]}

# The source's extra dataset of make bench-replica-vm, in MiB.
BENCH_REPLICA_MB ?= 1024

.PHONY: bench-replica-vm
bench-replica-vm: deps build ## two MariaDB replicas of a source holding BENCH_REPLICA_MB more under qemu: request→ACTIVE of each (one seed backup, two restores), then the replication end to end
	ci/deps.sh test
	@mkdir -p $(OUT_DIR)
	STRATA_CACHE_DIR=$(CACHE_DIR) STRATA_E2E_REPLICA_MB=$(BENCH_REPLICA_MB) $(GO) test -tags e2e -count=1 -v -timeout 180m \
		-run TestReplicasOfAMariaDBInstanceFollowItShowTheirLagAndDetach ./ci/e2e/ 2>&1 | tee $(OUT_DIR)/bench-replica-vm.log | grep -E 'FIGURE|--- |ok|FAIL'; exit $${PIPESTATUS[0]}

.PHONY: bench-agent
bench-agent: build ## measure the agent: binary size, idle RSS and CPU after 60 s connected
	$(GO) run ./ci/bench/footprint -agent bin/strata-agent -duration 60s

# Packer, built once from the Go module proxy into $(PACKER_TOOLS) (never
# committed), for the plugin's tests; packer-sdc, from the SDK version in
# go.mod, generates the plugin's HCL2 specs.
PACKER_VERSION ?= 1.12.0
PACKER_TOOLS   ?= $(CACHE_DIR)/tools
PACKER_SDK      = $(shell $(GO) list -m -f '{{.Version}}' github.com/hashicorp/packer-plugin-sdk)

.PHONY: packer-bin
packer-bin: go-check ## build the packer binary (PACKER_VERSION, from the Go module proxy) into CACHE_DIR/tools once; reused after
	ci/packer/tools.sh packer '$(PACKER_VERSION)' '$(PACKER_TOOLS)'

.PHONY: packer-generate
packer-generate: go-check ## regenerate the Packer plugin's HCL2 specs (*.hcl2spec.go) with the SDK's packer-sdc
	sdk='$(PACKER_SDK)' && [ -n "$$sdk" ] && sdc=$$(ci/packer/tools.sh packer-sdc "$$sdk" '$(PACKER_TOOLS)') && \
		PATH="$$(dirname "$$sdc"):$$PATH" $(GO) generate ./builder/packer/...

.PHONY: test-packer
test-packer: go-check deps build packer-bin ## the Packer plugin with a real packer: strata builder + strata-register, null builder + strata-elements over SSH to a VM, bad input (minutes)
	@mkdir -p '$(OUT_DIR)'
	packer=$$(ci/packer/tools.sh packer '$(PACKER_VERSION)' '$(PACKER_TOOLS)') || exit 1; \
	STRATA_PACKER=$$packer STRATA_CACHE_DIR='$(CACHE_DIR)' \
		$(GO) test -tags 'e2e packer' -run 'Packer' -count=1 -v -timeout 60m ./ci/e2e/ 2>&1 | tee '$(OUT_DIR)/test-packer.log' | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)' ; exit $${PIPESTATUS[0]}

.PHONY: clean
clean: ## remove bin/ and out/ (the download cache in CACHE_DIR stays)
	rm -rf bin out
