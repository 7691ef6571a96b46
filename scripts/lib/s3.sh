# shellcheck shell=bash
# Sourced by scripts/test: a real S3-compatible server for the output-store tests.
#
# versitygw (github.com/versity/versitygw, posix backend) verifies AWS Signature V4 on every request, presigned
# URLs included, so the tests can prove that a run's upload URLs write its own objects and nothing else. It is
# built once from the Go module proxy (about a minute) into ~/.cache/lm-eval-aas/bin; the tests start and stop
# their own instances on 127.0.0.1 (tests/common/s3.rs).

VERSITYGW_VERSION="v1.8.0"

# shellcheck source=scripts/lib/go.sh
source "$(dirname "${BASH_SOURCE[0]}")/go.sh"

build_versitygw() {
    GOBIN=$(dirname "$1") GOFLAGS=-mod=mod go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
}

# Prints the path of the versitygw binary, building it first if needed.
versitygw_binary() {
    go_binary versitygw "$VERSITYGW_VERSION" build_versitygw
}
