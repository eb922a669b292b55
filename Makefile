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

.PHONY: go-check
go-check:
	@command -v $(GO) >/dev/null || { echo "make: Go is not installed (need Go >= 1.26 on PATH)"; exit 1; }

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
image: deps build ## build the default guest image ($(RECIPE)) into $(OUT_DIR)
	bin/strata build -f $(RECIPE) --image-cache $(CACHE_DIR) -o $(OUT_DIR)/$(IMAGE_NAME)

IMAGE_NAME = $(basename $(notdir $(RECIPE)))

.PHONY: boot-test
boot-test: deps build ## boot $(OUT_DIR)/<recipe>.qcow2 (make image first): the agent must enroll and prepare, or a login prompt for images without one
	if grep -q '^datastore:' $(RECIPE); then \
		bin/strata boot-test $(OUT_DIR)/$(IMAGE_NAME).qcow2 --agent; \
	else \
		bin/strata boot-test $(OUT_DIR)/$(IMAGE_NAME).qcow2 --expect 'login:'; \
	fi

.PHONY: publish
publish: build ## publish $(OUT_DIR)/<recipe>.qcow2 to Glance and register its datastore version (credentials: OS_* or OS_CLOUD; TROVE_URL also registers in a Trove)
	bin/strata image publish $(RECIPE) --image $(OUT_DIR)/$(IMAGE_NAME).qcow2 $(if $(TROVE_URL),--trove-url $(TROVE_URL))

.PHONY: test
test: deps build ## install what the tests need, then run every test (unit, real servers, one image built and booted)
	ci/deps.sh test openstack dib
	$(GO) vet ./...
	$(GO) vet -tags e2e ./ci/e2e/
	$(GO) vet -tags openstack ./builder/publish/ ./controller/imagestore/glance/
	$(GO) vet -tags 'e2e packer' ./ci/e2e/
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	CGO_ENABLED=1 $(GO) test -race -count=1 ./agent/... ./controller/... ./builder/publish/...
	$(GO) test -count=1 $$($(GO) list ./builder/... | grep -v /builder/publish) . ./ci/
	$(MAKE) e2e
	$(MAKE) test-packer

.PHONY: test-openstack
test-openstack: build ## publishing against Debian's keystone, glance-api and trove-api on 127.0.0.1 (installs them), incl. the MariaDB image (make image)
	ci/deps.sh build boot openstack
	$(MAKE) image
	STRATA_MARIADB_IMAGE=$(OUT_DIR)/mariadb-10.11.qcow2 CGO_ENABLED=1 $(GO) test -tags openstack -race -count=1 -p 1 -v -timeout 20m \
		./builder/publish/ ./controller/imagestore/glance/ ./controller/compute/nova/ 2>&1 | tee $(OUT_DIR)/test-openstack.log \
		| grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)' ; exit $${PIPESTATUS[0]}

# The datastore `make e2e` runs through the API besides MariaDB (which the
# controller's own end-to-end test covers): redis, postgresql, mariadb or all.
DATASTORE ?= redis

.PHONY: e2e
e2e: deps build ## end-to-end: images built by bin/strata, booted under qemu; the controller with MariaDB and DATASTORE=$(DATASTORE); DIB's elements through disk-image-create (minutes)
	ci/deps.sh test dib
	@mkdir -p $(OUT_DIR)
	STRATA_CACHE_DIR=$(CACHE_DIR) STRATA_E2E_DATASTORES=$(DATASTORE) $(GO) test -tags e2e -count=1 -v -timeout 80m ./ci/e2e/ 2>&1 | tee $(OUT_DIR)/e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)' ; exit $${PIPESTATUS[0]}

.PHONY: e2e-all
e2e-all: ## end-to-end with every datastore (mariadb, postgresql, redis) through the API, and the whole DIB compatibility suite (Debian 13, UEFI boot)
	$(MAKE) e2e DATASTORE=all

.PHONY: bench
bench: deps build ## benchmarks: cold/warm/unchanged build seconds, qcow2 MB, boot-to-marker seconds
	ci/bench/build.sh

.PHONY: bench-agent
bench-agent: build ## measure the agent: binary size, idle RSS and CPU after 60 s connected
	$(GO) run ./agent/bench/footprint -agent bin/strata-agent -duration 60s

# Packer, built once from the Go module proxy into $(PACKER_TOOLS) (never
# committed), for the plugin's tests; packer-sdc, from the SDK version in
# go.mod, generates the plugin's HCL2 specs.
PACKER_VERSION ?= 1.12.0
PACKER_TOOLS   ?= $(CACHE_DIR)/tools
PACKER_SDK      = $(shell $(GO) list -m -f '{{.Version}}' github.com/hashicorp/packer-plugin-sdk)

.PHONY: packer-bin
packer-bin: go-check ## build the packer binary (PACKER_VERSION, from the Go module proxy) into CACHE_DIR/tools once; reused after
	ci/packer/tools.sh packer $(PACKER_VERSION) $(PACKER_TOOLS)

.PHONY: packer-generate
packer-generate: go-check ## regenerate the Packer plugin's HCL2 specs (*.hcl2spec.go) with the SDK's packer-sdc
	sdc=$$(ci/packer/tools.sh packer-sdc $(PACKER_SDK) $(PACKER_TOOLS)) && \
		PATH=$$(dirname $$sdc):$$PATH $(GO) generate ./builder/packer/...

.PHONY: test-packer
test-packer: deps build packer-bin ## the Packer plugin with a real packer: strata builder + strata-register, null builder + strata-elements over SSH to a VM, bad input (minutes)
	@mkdir -p $(OUT_DIR)
	STRATA_PACKER=$$(ci/packer/tools.sh packer $(PACKER_VERSION) $(PACKER_TOOLS)) STRATA_CACHE_DIR=$(CACHE_DIR) \
		$(GO) test -tags 'e2e packer' -run 'Packer' -count=1 -v -timeout 60m ./ci/e2e/ 2>&1 | tee $(OUT_DIR)/test-packer.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)' ; exit $${PIPESTATUS[0]}

.PHONY: clean
clean: ## remove bin/ and out/ (the download cache in CACHE_DIR stays)
	rm -rf bin out
