package wire

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"

	"golang.org/x/crypto/ssh"
)

// NewEnrollmentToken returns a fresh one-time token (130 bits from
// crypto/rand) for a bootstrap document. Store only HashToken(token).
func NewEnrollmentToken() string { return rand.Text() + rand.Text() }

// HashToken is the form in which a store keeps and looks up enrollment
// tokens, so a leaked store does not leak usable tokens.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte("strata-enrollment-v1\x00" + token))
	return hex.EncodeToString(sum[:])
}

// AgentKey is an agent's public key as a store records it.
type AgentKey struct {
	// Fingerprint is ssh.FingerprintSHA256 of the key ("SHA256:...").
	Fingerprint string
	// AuthorizedKey is the key as an authorized_keys line.
	AuthorizedKey string
}

// NewAgentKey describes key for a store.
func NewAgentKey(key ssh.PublicKey) AgentKey {
	line := ssh.MarshalAuthorizedKey(key)
	return AgentKey{Fingerprint: ssh.FingerprintSHA256(key), AuthorizedKey: string(line[:len(line)-1])}
}

// ValidEnrollmentToken reports whether token has the form of an enrollment
// token (what a bootstrap may carry); the server refuses anything else
// before it touches its store.
func ValidEnrollmentToken(token string) bool { return tokenPattern.MatchString(token) }
