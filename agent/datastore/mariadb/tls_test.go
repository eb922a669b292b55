package mariadb_test

import (
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"strata/agent/datastore"
	"strata/agent/datastore/mariadb"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/datastore/servertest"
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
// data volume) and reports its fingerprint; a real client connecting over
// TCP with TLS sees that certificate, the session is encrypted, and a
// client that pinned another fingerprint is refused. Plain TCP works
// until a configuration group sets require_secure_transport, then only
// TLS does (the agent's socket still counts as secure).
func TestClientsConnectOverTLSAndSeeTheReportedCertificate(t *testing.T) {
	inst := mariadbtest.NewT(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	inst.Manager.Close()
	inst.Config.SkipNetworking, inst.Config.BindAddress, inst.Config.Port = false, "127.0.0.1", port
	if inst.Manager, err = mariadb.New(inst.Config); err != nil {
		t.Fatal(err)
	}
	res := servertest.MustPrepare(t, inst.Manager, wire.PrepareArgs{
		Users: []wire.User{{Name: "tlsuser", Password: "tls pw"}},
	}, 2*time.Minute)
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

	// open connects over TCP, with TLS pinning pin unless pin is "".
	open := func(pin string, seen *string) (*sql.DB, error) {
		c := mysql.NewConfig()
		c.Net, c.Addr, c.User, c.Passwd = "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "tlsuser", "tls pw"
		if pin != "" {
			c.TLSConfig = "pin-" + pin
			if err := mysql.RegisterTLSConfig(c.TLSConfig, pinnedTLS(pin, seen)); err != nil {
				t.Fatal(err)
			}
		}
		db, err := sql.Open("mysql", c.FormatDSN())
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		if err := db.Ping(); err != nil {
			db.Close()
			return nil, err
		}
		t.Cleanup(func() { db.Close() })
		return db, nil
	}
	cipherOf := func(db *sql.DB) string {
		var name, cipher string
		if err := db.QueryRow("SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil {
			t.Fatal(err)
		}
		return cipher
	}
	var seen string
	db, err := open(res.TLSFingerprint, &seen)
	if err != nil {
		t.Fatalf("a client pinning the reported fingerprint cannot connect: %v", err)
	}
	if seen != res.TLSFingerprint {
		t.Fatalf("the server presented %q, prepare reported %q", seen, res.TLSFingerprint)
	}
	if c := cipherOf(db); c == "" {
		t.Fatal("the pinned connection is not encrypted (Ssl_cipher empty)")
	}
	wrong := "00" + res.TLSFingerprint[2:]
	if res.TLSFingerprint[:2] == "00" {
		wrong = "11" + res.TLSFingerprint[2:]
	}
	var seen2 string
	if _, err := open(wrong, &seen2); err == nil {
		t.Fatal("a client pinning another fingerprint connected")
	}

	// TLS is offered, not required, by default.
	plain, err := open("", nil)
	if err != nil {
		t.Fatalf("a plain TCP client is refused by default: %v", err)
	}
	if c := cipherOf(plain); c != "" {
		t.Fatalf("the plain connection reports cipher %q", c)
	}
	if _, err := inst.Manager.ApplyConfiguration(ctxT(t), wire.ConfigurationArgs{
		Rules:  []wire.ParameterRule{{Name: "require_secure_transport", Type: "boolean"}},
		Values: values("require_secure_transport", `true`),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := open("", nil); err == nil {
		t.Fatal("require_secure_transport on: a plain TCP client still connects")
	}
	if _, err := open(res.TLSFingerprint, &seen); err != nil {
		t.Fatalf("require_secure_transport on: the pinned TLS client cannot connect: %v", err)
	}
	if _, err := inst.Manager.ListDatabases(ctxT(t)); err != nil {
		t.Fatalf("require_secure_transport on: the agent's socket session fails: %v", err)
	}
}
