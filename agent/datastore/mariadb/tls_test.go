package mariadb_test

import (
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/go-sql-driver/mysql"

	"strata/agent/datastore"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/wire"
)

var fingerprintPattern = regexp.MustCompile(`^([0-9a-f]{2}:){31}[0-9a-f]{2}$`)

// pinnedTLS is what a client that pins the reported fingerprint uses: no
// chain to trust (the certificate is self-signed), only the pin.
func pinnedTLS(fingerprint string, seen *string) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // the pin below is the whole check
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			*seen = datastore.Fingerprint(raw[0])
			if *seen != fingerprint {
				return errors.New("certificate fingerprint " + *seen + " is not the pinned " + fingerprint)
			}
			return nil
		},
	}
}

// Prepare makes a per-instance certificate (ECDSA P-256, key 0600 on the
// data volume) and reports its fingerprint; a real client connecting with
// TLS sees that certificate, the session is encrypted, and a client that
// pinned another fingerprint is refused.
func TestClientsConnectOverTLSAndSeeTheReportedCertificate(t *testing.T) {
	inst, res := mariadbtest.PreparedT(t, wire.PrepareArgs{
		Users: []wire.User{{Name: "tlsuser", Password: "tls pw"}},
	})
	if !fingerprintPattern.MatchString(res.TLSFingerprint) {
		t.Fatalf("prepare reported TLS fingerprint %q", res.TLSFingerprint)
	}
	dir := filepath.Join(filepath.Dir(inst.Config.DataDir), "tls")
	fi, err := os.Stat(filepath.Join(dir, "key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v, %v; want mode 0600", fi, err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(pair.Certificate[0])
	if cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("certificate key is %v, want ECDSA", cert.PublicKeyAlgorithm)
	}

	connect := func(name, pin string, seen *string) error {
		if err := mysql.RegisterTLSConfig(name, pinnedTLS(pin, seen)); err != nil {
			t.Fatal(err)
		}
		c := mysql.NewConfig()
		c.Net, c.Addr, c.User, c.Passwd, c.TLSConfig = "unix", inst.Config.Socket, "tlsuser", "tls pw", name
		db, err := mysql.NewConnector(c)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := db.Connect(ctxT(t))
		if err != nil {
			return err
		}
		defer conn.Close()
		return nil
	}
	var seen string
	if err := connect("pinned-good", res.TLSFingerprint, &seen); err != nil {
		t.Fatalf("a client pinning the reported fingerprint cannot connect: %v", err)
	}
	if seen != res.TLSFingerprint {
		t.Fatalf("the server presented %q, prepare reported %q", seen, res.TLSFingerprint)
	}
	// The session really is TLS, as the server sees it.
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User, c.Passwd, c.TLSConfig = "unix", inst.Config.Socket, "tlsuser", "tls pw", "pinned-good"
	db, err := sql.Open("mysql", c.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var name, cipher string
	if err := db.QueryRow("SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil || cipher == "" {
		t.Fatalf("Ssl_cipher = %q, %v; want a TLS session", cipher, err)
	}
	wrong := "00" + res.TLSFingerprint[2:]
	if res.TLSFingerprint[:2] == "00" {
		wrong = "11" + res.TLSFingerprint[2:]
	}
	var seen2 string
	if err := connect("pinned-bad", wrong, &seen2); err == nil {
		t.Fatal("a client pinning another fingerprint connected")
	}
}
