package agentendpoint

import (
	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
)

// RawOpChannel opens an operation channel to instanceID's agent without
// writing anything, as a misbehaving controller would (tests only).
func RawOpChannel(s *Server, instanceID string) (ssh.Channel, error) {
	s.mu.Lock()
	sess := s.sessions[instanceID]
	s.mu.Unlock()
	if sess == nil {
		return nil, errNoSession
	}
	ch, reqs, err := sess.conn.OpenChannel(wire.ChannelOperation, nil)
	if err != nil {
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	return ch, nil
}

// SessionOf identifies instanceID's current session (nil: none).
func SessionOf(s *Server, instanceID string) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess := s.sessions[instanceID]; sess != nil {
		return sess
	}
	return nil
}

var errNoSession = errorString("no session")

type errorString string

func (e errorString) Error() string { return string(e) }
