# gatehouse: `make run` brings the system up, `make test` runs every test.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)
export GOBIN := $(BIN)

BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPCURL_VERSION            := v1.9.4
NATS_SERVER_VERSION        := v2.15.3

MODULES := gen authsvc edgesvc e2e bench examples/go-room examples/go-commands
# Every package of every workspace module (go.work's root is not a module itself).
PKGS = $$(go list -m -f '{{.Dir}}/...')

.PHONY: help
help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build bin/authsvc and bin/edgesvc
	go build -o $(BIN)/authsvc ./authsvc
	go build -o $(BIN)/edgesvc ./edgesvc

.PHONY: run
run: build ## Start PostgreSQL (or use DATABASE_URL), authsvc and edgesvc; print the URL
	scripts/run.sh

.PHONY: cluster
cluster: build $(BIN)/nats-server ## Two authsvc, two edges over NATS and HAProxy in front (needs haproxy); print the URLs
	scripts/cluster.sh

.PHONY: images
images: ## Static binaries (bin/static/) and FROM-scratch images gatehouse/authsvc, gatehouse/edgesvc, gatehouse/nats-server (podman)
	mkdir -p $(BIN)/static
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o $(BIN)/static/authsvc ./authsvc
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o $(BIN)/static/edgesvc ./edgesvc
	[ -x $(BIN)/static/nats-server ] || CGO_ENABLED=0 GOBIN=$(BIN)/static go install -trimpath -ldflags='-s -w' github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)
	for s in authsvc edgesvc nats-server; do \
	  podman build -q -f deploy/Containerfile --build-arg SERVICE=$$s -t localhost/gatehouse/$$s:latest $(BIN)/static >/dev/null; done

.PHONY: test-deploy
test-deploy: images ## Prove the deployment artifacts: the images run from deploy/kubernetes with podman kube play, edges drain with 1001
	db=$$(scripts/pg.sh) && \
	GATEHOUSE_TEST_DATABASE="$$db" GATEHOUSE_BIN="$(BIN)" go test -tags deploy -count=1 -run TestDeploy -v ./e2e

# The fault tests stop and start PostgreSQL, so they always use the private cluster
# (scripts/pg.sh without DATABASE_URL), whatever the other tests use.
CHAOS = db=$$(env -u DATABASE_URL scripts/pg.sh) && \
	GATEHOUSE_TEST_DATABASE="$$db" GATEHOUSE_CHAOS_PG=private GATEHOUSE_BIN="$(BIN)" go test -tags chaos -count=1 -timeout 15m -run TestChaos -v ./e2e

.PHONY: chaos
chaos: build $(BIN)/nats-server ## Only the fault tests under load (make test runs them too), figures printed: PostgreSQL and authsvc restarted, an edge drained of 10,000 sockets, NATS restarted
	$(CHAOS)

.PHONY: test
test: build $(BIN)/grpcurl $(BIN)/buf $(BIN)/nats-server examples/node/node_modules ## Run every test, the fault tests last, against a real PostgreSQL (DATABASE_URL, or a private one under .run/)
	db=$$(scripts/pg.sh) && \
	GATEHOUSE_TEST_DATABASE="$$db" GATEHOUSE_BIN="$(BIN)" go test -count=1 -timeout 20m $(PKGS)
	$(CHAOS)

.PHONY: test-race
test-race: $(BIN)/grpcurl $(BIN)/buf $(BIN)/nats-server examples/node/node_modules ## make test under the race detector: tests with -race, e2e against race-built services
	mkdir -p $(BIN)/race
	go build -race -o $(BIN)/race/authsvc ./authsvc
	go build -race -o $(BIN)/race/edgesvc ./edgesvc
	cp $(BIN)/grpcurl $(BIN)/buf $(BIN)/nats-server $(BIN)/race/
	db=$$(scripts/pg.sh) && \
	GATEHOUSE_TEST_DATABASE="$$db" GATEHOUSE_BIN="$(BIN)/race" GORACE=halt_on_error=1 go test -race -count=1 -timeout 30m $(PKGS)

# The Node example's dependencies, exactly as locked.
examples/node/node_modules: examples/node/package-lock.json
	cd examples/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: bench
bench: build $(BIN)/nats-server ## Load benchmark against same-run bare baselines (QUICK=1: under 2 minutes); results in bench/results/
	go build -o $(BIN)/bench ./bench
	db=$$(scripts/pg.sh) && \
	DATABASE_URL="$$db" taskset -c 1 $(BIN)/bench run -bin $(BIN) $(if $(QUICK),-quick)

.PHONY: microbench
microbench: build ## go test -bench: hot functions, ValidateSession, handshake and echo micro-benchmarks
	db=$$(scripts/pg.sh) && \
	GATEHOUSE_TEST_DATABASE="$$db" GATEHOUSE_BIN="$(BIN)" go test -run '^$$' -bench . -benchmem $(PKGS)

$(BIN)/buf:
	go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/grpcurl:
	go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
$(BIN)/nats-server:
	go install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)

.PHONY: grpcurl
grpcurl: $(BIN)/grpcurl ## Install just the pinned grpcurl into bin/ (about a minute; make tools also builds buf)

.PHONY: tools
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl $(BIN)/nats-server ## Install the pinned tools into bin/

.PHONY: generate
generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## Regenerate gen/ from proto/
	find gen -name '*.pb.go' -delete
	buf generate

# The released contracts, one image per proto package: buf breaking compares proto/
# against each, so a breaking change fails `make lint` however many commits it spans.
# Refresh them with `make contract` only when releasing (a breaking change also needs a
# new package, such as gatehouse.auth.v2, rather than a refreshed image).
CONTRACT_PACKAGES := auth edge app

.PHONY: breaking
breaking: $(BIN)/buf ## Fail if proto/ breaks a released contract (contract/*.json)
	@for p in $(CONTRACT_PACKAGES); do echo "buf breaking proto --against contract/gatehouse.$$p.v1.json"; buf breaking proto --against contract/gatehouse.$$p.v1.json || exit 1; done

.PHONY: contract
contract: $(BIN)/buf ## Record proto/ as the released contracts (run when releasing)
	for p in $(CONTRACT_PACKAGES); do buf build proto --path proto/gatehouse/$$p/v1 --exclude-source-info -o -#format=json | jq . > contract/gatehouse.$$p.v1.json; done

.PHONY: lint
lint: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## vet, gofmt, buf lint/format/breaking, generated-code drift, tidy
	go vet $(PKGS)
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	buf lint
	buf format proto --diff --exit-code
	@$(MAKE) breaking
	@$(MAKE) generate
	@git diff --exit-code -- gen || { echo "gen/ differs from 'make generate': commit the regenerated code"; exit 1; }
	@test -z "$$(git status --porcelain -- gen)" || { echo "untracked files in gen/ after 'make generate'"; exit 1; }
	@for m in $(MODULES); do (cd $$m && GOWORK=off go mod tidy -diff) || { echo "$$m: go.mod/go.sum not tidy (run: cd $$m && GOWORK=off go mod tidy)"; exit 1; }; done
	@for m in $(MODULES); do (cd $$m && GOWORK=off go build ./... && GOWORK=off go vet ./...) || { echo "$$m does not build with GOWORK=off"; exit 1; }; done

.PHONY: clean
clean: ## Stop and delete the private PostgreSQL (wherever it lives), bin/ and .run/
	scripts/pg.sh clean
	rm -rf $(BIN) .run examples/node/node_modules
