package datastore_test

import (
	"crypto/tls"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"strata/agent/datastore"
)

// EnsureCertificate makes a pair once and then finds it (same
// fingerprint: a rebuild keeps what clients pinned); a generation cut
// short before cert.pem (only the key written) is redone; a cert.pem
// whose key is gone or belongs to another certificate is an error naming
// the files, and the files are left as they were.
func TestEnsureCertificateMakesOnceKeepsAndRefusesABrokenPair(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	owner, err := datastore.LookupOSUser(me.Username)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := filepath.Join(t.TempDir(), "tls")
	first, err := datastore.EnsureCertificate(log, dir, owner)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(first.CertFile, first.KeyFile)
	if err != nil || datastore.Fingerprint(pair.Certificate[0]) != first.Fingerprint {
		t.Fatalf("the reported fingerprint %q is not the certificate's (%v)", first.Fingerprint, err)
	}
	if fi, err := os.Stat(first.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode: %v %v", fi, err)
	}
	again, err := datastore.EnsureCertificate(log, dir, owner)
	if err != nil || again.Fingerprint != first.Fingerprint {
		t.Fatalf("second call: %q, %v; want the same certificate %q", again.Fingerprint, err, first.Fingerprint)
	}

	// Cut short after the key: a new pair.
	if err := os.Remove(first.CertFile); err != nil {
		t.Fatal(err)
	}
	redone, err := datastore.EnsureCertificate(log, dir, owner)
	if err != nil || redone.Fingerprint == "" || redone.Fingerprint == first.Fingerprint {
		t.Fatalf("after a cut-short generation: %q, %v; want a new certificate", redone.Fingerprint, err)
	}

	// A key that is not the certificate's: refused, nothing replaced.
	other := filepath.Join(t.TempDir(), "tls")
	o, err := datastore.EnsureCertificate(log, other, owner)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := os.ReadFile(o.KeyFile)
	if err := os.WriteFile(redone.KeyFile, foreign, 0o600); err != nil {
		t.Fatal(err)
	}
	certBefore, _ := os.ReadFile(redone.CertFile)
	if _, err := datastore.EnsureCertificate(log, dir, owner); err == nil || !strings.Contains(err.Error(), redone.CertFile) {
		t.Fatalf("a mismatched pair: %v; want an error naming %s", err, redone.CertFile)
	}
	if certAfter, _ := os.ReadFile(redone.CertFile); string(certAfter) != string(certBefore) {
		t.Fatal("a mismatched pair was replaced")
	}
	if err := os.Remove(redone.KeyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := datastore.EnsureCertificate(log, dir, owner); err == nil || !strings.Contains(err.Error(), "key.pem") {
		t.Fatalf("a certificate without its key: %v; want an error naming key.pem", err)
	}
}
