package agentendpoint

import (
	"log/slog"

	"golang.org/x/crypto/ssh"
)

// MemEndpoint is the agent endpoint over a MemStore: the SSH server and the
// store it persists through, in one value, for programs that talk to one
// short-lived guest and keep nothing — `strata boot-test --agent`, the
// end-to-end tests and the agent footprint bench. The running controller
// uses Endpoint (SQLStore) instead.
type MemEndpoint struct {
	*Server
	*MemStore
}

// NewMemEndpoint returns an endpoint with hostKey and an empty MemStore;
// call Serve to accept agents and AddInstance to let one enroll.
func NewMemEndpoint(hostKey ssh.Signer, log *slog.Logger) (*MemEndpoint, error) {
	st := NewMemStore()
	srv, err := NewServer(ServerConfig{HostKey: hostKey, Store: st, Logger: log})
	if err != nil {
		return nil, err
	}
	return &MemEndpoint{Server: srv, MemStore: st}, nil
}
