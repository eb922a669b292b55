// Package identity keeps the agent's own SSH key pair and its enrollment
// record in the state directory. The key is generated in the guest, written
// 0600, and never leaves it: only the public half is ever sent (offered as
// the SSH client key). The enrollment record ties the key to the instance
// it was enrolled for, so a state directory cannot be reused for another
// instance by mistake.
//
// It must not send anything anywhere and must refuse, not repair, a key
// file that others could read.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
)

const (
	keyFile      = "agent_ed25519"
	enrolledFile = "enrolled.json"
)

// Identity is the agent's key and enrollment state.
type Identity struct {
	Signer     ssh.Signer
	Enrolled   bool
	dir        string
	instanceID string
}

type record struct {
	InstanceID  string    `json:"instance_id"`
	Fingerprint string    `json:"key_fingerprint"`
	EnrolledAt  time.Time `json:"enrolled_at"`
}

// Load opens (creating on first start) the identity in stateDir for
// instanceID.
func Load(stateDir, instanceID string) (*Identity, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	id := &Identity{dir: stateDir, instanceID: instanceID}
	path := filepath.Join(stateDir, keyFile)
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := generate(path); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("agent key: %w", err)
	case st.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("agent key %s has mode %04o; it must be readable by its owner only (0600)", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("agent key: %w", err)
	}
	id.Signer, err = ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("agent key %s: %w", path, err)
	}

	rec, err := os.ReadFile(filepath.Join(stateDir, enrolledFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("enrollment record: %w", err)
	default:
		var r record
		if err := json.Unmarshal(rec, &r); err != nil {
			return nil, fmt.Errorf("enrollment record %s is corrupt: %w", filepath.Join(stateDir, enrolledFile), err)
		}
		if r.InstanceID != instanceID {
			return nil, fmt.Errorf("state directory %s belongs to instance %s, but the bootstrap names %s", stateDir, r.InstanceID, instanceID)
		}
		if fp := ssh.FingerprintSHA256(id.Signer.PublicKey()); r.Fingerprint != fp {
			return nil, fmt.Errorf("enrollment record is for key %s, but the agent key is %s", r.Fingerprint, fp)
		}
		id.Enrolled = true
	}
	return id, nil
}

// Fingerprint of the public key.
func (id *Identity) Fingerprint() string { return ssh.FingerprintSHA256(id.Signer.PublicKey()) }

// MarkEnrolled records that the controller accepted the key.
func (id *Identity) MarkEnrolled() error {
	data, _ := json.Marshal(record{InstanceID: id.instanceID, Fingerprint: id.Fingerprint(), EnrolledAt: time.Now().UTC()})
	if err := writeAtomic(filepath.Join(id.dir, enrolledFile), data); err != nil {
		return err
	}
	id.Enrolled = true
	return nil
}

func generate(path string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate agent key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "strata-agent")
	if err != nil {
		return fmt.Errorf("encode agent key: %w", err)
	}
	return writeAtomic(path, pem.EncodeToMemory(block))
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
