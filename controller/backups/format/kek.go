package format

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KEK is the controller's key-encryption key: it wraps each backup's data
// key. Its ID (derived from the key, not secret) is recorded in manifests
// so a restore with another key fails with a message that says so.
type KEK struct {
	id   string
	aead cipher.AEAD
}

// KeySize is the length of a KEK and of a data key, in bytes.
const KeySize = 32

// ErrWrongKey is wrapped by errors that mean the KEK at hand did not wrap
// the backup's data key.
var ErrWrongKey = errors.New("wrong key-encryption key")

// NewKEK makes a KEK of 32 bytes.
func NewKEK(key []byte) (*KEK, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key-encryption key: %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(append([]byte("strata kek id\x00"), key...))
	return &KEK{id: hex.EncodeToString(h[:8]), aead: aead}, nil
}

// ID names the key without revealing it.
func (k *KEK) ID() string { return k.id }

// LoadKEK reads a KEK file: 64 hex digits (a trailing newline is fine),
// owned by this user and readable by no one else (mode 0600 or 0400).
func LoadKEK(path string) (*KEK, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key-encryption key %s: mode %04o lets others read it; chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("key-encryption key %s: want %d hex digits (e.g. from `openssl rand -hex 32`)", path, 2*KeySize)
	}
	return NewKEK(key)
}

// LoadOrCreateKEK reads the KEK file at path, or creates it (mode 0600,
// 32 random bytes) if there is none. created says which.
func LoadOrCreateKEK(path string) (k *KEK, created bool, err error) {
	k, err = LoadKEK(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("key-encryption key: %w", err)
	}
	// Written beside and linked into place: a crash leaves a whole key
	// or none, and a concurrent creator's key is never overwritten.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".kek-*")
	if err != nil {
		return nil, false, fmt.Errorf("key-encryption key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if errors.Is(err, fs.ErrExist) {
		k, err = LoadKEK(path)
		return k, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("key-encryption key: %w", err)
	}
	k, err = NewKEK(key)
	return k, true, err
}

const wrapAAD = "strata backup data key v1"

// wrap seals a data key: nonce ‖ ciphertext ‖ tag.
func (k *KEK) wrap(dataKey []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(nonce, nonce, dataKey, []byte(wrapAAD)), nil
}

// unwrap opens a wrapped data key; kekID is the manifest's record of the
// KEK that wrapped it.
func (k *KEK) unwrap(wrapped []byte, kekID string) ([]byte, error) {
	if kekID != "" && kekID != k.id {
		return nil, fmt.Errorf("%w: the backup's data key was wrapped by key %s, this controller holds key %s", ErrWrongKey, kekID, k.id)
	}
	ns := k.aead.NonceSize()
	if len(wrapped) != ns+KeySize+k.aead.Overhead() {
		return nil, fmt.Errorf("wrapped data key: %d bytes, want %d", len(wrapped), ns+KeySize+k.aead.Overhead())
	}
	key, err := k.aead.Open(nil, wrapped[:ns], wrapped[ns:], []byte(wrapAAD))
	if err != nil {
		return nil, fmt.Errorf("%w: the backup's data key does not unwrap with key %s", ErrWrongKey, k.id)
	}
	return key, nil
}
