package wire

import (
	"fmt"
	"strings"
)

// ProtocolVersion is the protocol this build speaks: an agent states it in
// Hello, a controller serves it and MinProtocolVersion. Raise it when a
// change would confuse the other end's older build (a new kind, a field
// its strict decoder refuses), and say in doc.go what changed.
const ProtocolVersion = 2

// MinProtocolVersion is the oldest protocol a controller still serves:
// one version back, so an instance on last release's image keeps working
// after the controller is upgraded, until it is rebuilt onto a new image.
const MinProtocolVersion = ProtocolVersion - 1

// Protocol is the protocol an agent's Hello states. An agent of
// protocol 1 (images built before the field existed) sends none.
func (h Hello) Protocol() int {
	if h.ProtocolVersion == nil {
		return 1
	}
	return *h.ProtocolVersion
}

// ProtocolRefused starts the reply a controller gives a Hello whose
// protocol it does not serve, so the agent can tell this refusal (wait
// long, a rebuild fixes it) from others.
const ProtocolRefused = "protocol version refused"

// CheckProtocol says why a controller of this build refuses an agent that
// speaks protocol v, or returns "" when it serves it.
func CheckProtocol(v int) string {
	var why string
	switch {
	case v < MinProtocolVersion:
		why = "the agent is too old for this controller: rebuild the instance onto an image with a newer agent"
	case v > ProtocolVersion:
		why = "the agent is newer than this controller: upgrade the controller first, or rebuild the instance onto an image of this release"
	default:
		return ""
	}
	return fmt.Sprintf("%s: agent speaks protocol %d, this controller serves protocols %d to %d; %s",
		ProtocolRefused, v, MinProtocolVersion, ProtocolVersion, why)
}

// IsProtocolRefusal reports whether a Hello's refusal reply is a
// CheckProtocol message.
func IsProtocolRefusal(reply string) bool { return strings.HasPrefix(reply, ProtocolRefused+":") }

// KindProtocol is the protocol version that introduced kind
// (Class.Since; 1 for every kind without one, and for unknown kinds).
// A controller sends an agent only kinds of its protocol or older.
func KindProtocol(kind Kind) int {
	if c, ok := Classes[kind]; ok && c.Since > 1 {
		return c.Since
	}
	return 1
}
