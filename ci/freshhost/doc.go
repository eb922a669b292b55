// Package freshhost proves that the README's two commands set themselves up
// on their first run on a fresh Debian 12 machine, the way a CI job in the
// golang:1.26-bookworm image (or any Debian container) meets them: its test
// (build tag freshhost, `make test-fresh-host`, part of `make test`) builds
// a minimal bookworm root with mmdebstrap from the mirror the builder would
// use, gives it what such a container has — Go at /usr/local/go, make, and
// Docker's policy-rc.d — and runs the project's own set-up inside it:
// every `ci/deps.sh` line that `make image` and `make test` run, then
// `make build`.
//
// The root is thrown away after the test; the .deb files it downloaded
// are kept under CACHE_DIR/apt/fresh-host so that a warm run downloads
// nothing. Every command runs in its own mount and PID namespace (the
// builder's executor), so nothing stays mounted or running after a
// failure or Ctrl-C.
//
// This package holds only the test; it must not grow helpers that the
// builder, agent or controller use.
package freshhost
