package postgresql_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"strata/agent/datastore"
	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// Prepare makes a per-instance certificate (key 0600, owned by the
// server's account, on the data volume), turns ssl on and reports the
// certificate's fingerprint; a real client connecting over TCP with TLS
// sees that certificate and the server counts the session as SSL; a
// client pinning another fingerprint is refused.
func TestClientsConnectOverTLSAndSeeTheReportedCertificate(t *testing.T) {
	inst := postgresqltest.NewT(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	inst.Manager.Close()
	inst.Config.ListenAddresses, inst.Config.Port = "127.0.0.1", port
	if inst.Manager, err = postgresql.New(inst.Config); err != nil {
		t.Fatal(err)
	}
	res := servertest.MustPrepare(t, inst.Manager, wire.PrepareArgs{
		Databases: []wire.Database{{Name: "shop"}},
		Users:     []wire.User{{Name: "tlsuser", Password: "tls pw", Databases: []string{"shop"}}},
	}, 2*time.Minute)
	if !regexp.MustCompile(`^([0-9a-f]{2}:){31}[0-9a-f]{2}$`).MatchString(res.TLSFingerprint) {
		t.Fatalf("prepare reported TLS fingerprint %q", res.TLSFingerprint)
	}
	if fi, err := os.Stat(filepath.Join(inst.Dir, "tls", "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v, %v; want mode 0600", fi, err)
	}

	connect := func(pin string, seen *string) (*pgx.ConnConfig, error) {
		c, err := pgx.ParseConfig("")
		if err != nil {
			t.Fatal(err)
		}
		c.Host, c.Port, c.User, c.Password, c.Database = "127.0.0.1", uint16(port), "tlsuser", "tls pw", "shop"
		c.Fallbacks = nil
		c.TLSConfig = &tls.Config{
			InsecureSkipVerify: true, // the pin is the whole check
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				*seen = datastore.Fingerprint(raw[0])
				if *seen != pin {
					return errors.New("certificate fingerprint " + *seen + " is not the pinned " + pin)
				}
				return nil
			},
		}
		return c, nil
	}
	var seen string
	c, _ := connect(res.TLSFingerprint, &seen)
	db := stdlib.OpenDB(*c)
	defer db.Close()
	var ssl bool
	if err := db.QueryRow("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Fatalf("a TLS client pinning the reported fingerprint: ssl %v, %v", ssl, err)
	}
	if seen != res.TLSFingerprint {
		t.Fatalf("the server presented %q, prepare reported %q", seen, res.TLSFingerprint)
	}
	wrong := "00" + res.TLSFingerprint[2:]
	if res.TLSFingerprint[:2] == "00" {
		wrong = "11" + res.TLSFingerprint[2:]
	}
	var seen2 string
	c2, _ := connect(wrong, &seen2)
	db2 := stdlib.OpenDB(*c2)
	defer db2.Close()
	if err := db2.Ping(); err == nil {
		t.Fatal("a client pinning another fingerprint connected")
	}
}
