package datastore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Certificate is the per-instance TLS certificate a datastore presents to
// its clients: files the server reads, and the fingerprint clients pin.
type Certificate struct {
	CertFile, KeyFile string
	// Fingerprint is Fingerprint(the certificate's DER).
	Fingerprint string
}

// certValidity is long: clients pin the fingerprint rather than trust a
// chain, and a renewal would change what they pinned.
const certValidity = 20 * 365 * 24 * time.Hour

// EnsureCertificate returns the certificate in dir (cert.pem, key.pem),
// making one first if there is none: an ECDSA P-256 key and a self-signed
// certificate for it, the key 0600 and both owned by owner (the server's
// OS user, which reads them). dir lives on the data volume, so a rebuilt
// instance keeps its certificate and the fingerprint its clients pinned.
// A complete pair that does not load (a key gone or not matching) is an
// error naming the files, never silently replaced: clients pinned it.
func EnsureCertificate(log *slog.Logger, dir string, owner OSUser) (Certificate, error) {
	c := Certificate{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	// cert.pem is written last: without it no pair was ever complete
	// (nor reported), and a new one is made.
	if _, err := os.Stat(c.CertFile); errors.Is(err, os.ErrNotExist) {
		if err := makeCertificate(c, dir, owner); err != nil {
			return c, err
		}
	} else if err != nil {
		return c, fmt.Errorf("tls: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return c, fmt.Errorf("tls: %s and %s do not load: %w", c.CertFile, c.KeyFile, err)
	}
	c.Fingerprint = Fingerprint(pair.Certificate[0])
	log.Info("tls certificate ready", "cert", c.CertFile, "sha256", c.Fingerprint)
	return c, nil
}

func makeCertificate(c Certificate, dir string, owner OSUser) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("tls: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("tls: serial: %w", err)
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "strata datastore " + host, Organization: []string{"strata"}},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(certValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{host},
	}
	if host == "" {
		tmpl.DNSNames = nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("tls: certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("tls: key: %w", err)
	}
	// The key first, the certificate last: its presence says the pair is
	// complete.
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{c.KeyFile, keyPEM, 0o600}, {c.CertFile, certPEM, 0o644}} {
		if err := WriteFileAtomic(f.path, f.data, f.mode); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		if err := owner.Chown(f.path); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}
	return nil
}

// Fingerprint is the SHA-256 of a DER certificate as lowercase hex pairs
// joined by colons (the form openssl x509 -fingerprint -sha256 prints,
// lowercased).
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := hex.EncodeToString(sum[:])
	parts := make([]string, 0, len(sum))
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}
