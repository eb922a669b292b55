package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/controller/compute"
	"strata/controller/server"
)

// The state directory holds the database, the agent host key, openrc and
// the VMs' disks: an existing one that others may read is tightened, one
// that belongs to another user is refused with a message.
func TestStateDirIsTightenedOrRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test changes a directory's owner: run it as root (make test does)")
	}
	ctx := context.Background()
	loose := filepath.Join(t.TempDir(), "state")
	os.MkdirAll(loose, 0o755)
	os.Chmod(loose, 0o755)
	db, err := server.OpenState(ctx, loose, "")
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if fi, _ := os.Stat(loose); fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory mode %o after opening it, want 700", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Join(loose, "controller.db")); fi.Mode().Perm() != 0o600 {
		t.Errorf("controller.db mode %o, want 600", fi.Mode().Perm())
	}

	foreign := filepath.Join(t.TempDir(), "theirs")
	os.MkdirAll(foreign, 0o777)
	os.Chown(foreign, 65534, 65534)
	_, err = server.OpenState(ctx, foreign, "")
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Fatalf("a state directory of another user: %v", err)
	}
	if _, err := os.Stat(filepath.Join(foreign, "controller.db")); err == nil {
		t.Error("a database was created in another user's directory")
	}
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(foreign, link)
	if _, err := server.OpenState(ctx, link, ""); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Fatalf("a symlink to another user's directory: %v", err)
	}
}

func startController(t *testing.T, limits server.HTTPLimits) *server.Controller {
	t.Helper()
	c, err := server.Start(context.Background(), server.Config{
		StateDir: t.TempDir(), Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", HTTP: limits, Compute: noCompute{},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	return c
}

// A client that announces a body and never sends it is cut off at the
// read timeout instead of holding its connection (and a handler) forever.
func TestAnAnnouncedBodyThatNeverComesDoesNotHoldTheConnection(t *testing.T) {
	c := startController(t, server.HTTPLimits{ReadTimeout: time.Second})
	addr := strings.TrimPrefix(c.APIURL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v3/auth/tokens HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"auth\":", addr)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn)
	if err != nil {
		t.Fatalf("the connection was still open %s after the body stopped: %v", time.Since(start).Round(time.Second), err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the connection was closed only after %s", d)
	}
}

// At most MaxConns connections are served at once; others wait for one
// to end.
func TestConnectionsAreCapped(t *testing.T) {
	c := startController(t, server.HTTPLimits{MaxConns: 2})
	addr := strings.TrimPrefix(c.APIURL, "http://")
	var held []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /v3 HTTP/1.1\r\nHost: x\r\n") // headers never finished
		held = append(held, conn)
	}
	time.Sleep(200 * time.Millisecond)
	client := &http.Client{Timeout: time.Second}
	if resp, err := client.Get(c.APIURL + "/v3"); err == nil {
		resp.Body.Close()
		t.Fatal("a third connection was served while two were held")
	}
	held[0].Close()
	client.Timeout = 5 * time.Second
	resp, err := client.Get(c.APIURL + "/v3")
	if err != nil {
		t.Fatalf("after one connection ended: %v", err)
	}
	resp.Body.Close()
}

// noCompute is a compute driver the HTTP tests never call.
type noCompute struct{ compute.Driver }

// Every URL the controller hands out — the Keystone catalog, Trove's links,
// the image API's version document — is built from the configured public
// URL, never from the request's Host header (a client could be sent
// elsewhere with its token).
func TestURLsComeFromThePublicURLNeverTheHostHeader(t *testing.T) {
	c := startController(t, server.HTTPLimits{})
	get := func(method, path, token, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, c.APIURL+path, strings.NewReader(body))
		req.Host = "evil.example:666"
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("X-Auth-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp, string(data)
	}
	login := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":%q}}},
		"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}`, c.AdminPassword)
	resp, body := get("POST", "/v3/auth/tokens", "", login)
	if resp.StatusCode != 201 || !strings.Contains(body, c.APIURL+"/v3") {
		t.Fatalf("login: HTTP %d %s", resp.StatusCode, body)
	}
	token := resp.Header.Get("X-Subject-Token")
	for _, path := range []string{"/v3/auth/catalog", "/v3", "/", "/image/", "/v1.0/"} {
		_, body := get("GET", path, token, "")
		if strings.Contains(body, "evil.example") {
			t.Errorf("GET %s hands out the request's Host: %s", path, body)
		}
	}
	_, body = get("POST", "/v3/auth/tokens", "", login)
	if strings.Contains(body, "evil.example") {
		t.Errorf("the token's catalog hands out the request's Host: %s", body)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key (PEM) into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "strata test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// --tls-cert/--tls-key: the API speaks TLS only, hands out https URLs
// (catalog, openrc), and a plain-HTTP request gets no answer from it; a
// certificate without its key, or one that does not load, is refused at
// start with the file named.
func TestTheAPIServesTLSWithACertificateAndKey(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	state := t.TempDir()
	c, err := server.Start(context.Background(), server.Config{
		StateDir: state, Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", Compute: noCompute{},
		TLSCert: certFile, TLSKey: keyFile, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	if !strings.HasPrefix(c.APIURL, "https://127.0.0.1:") {
		t.Fatalf("APIURL = %s, want https", c.APIURL)
	}
	if rc, _ := os.ReadFile(filepath.Join(state, "openrc")); !strings.Contains(string(rc), c.APIURL) {
		t.Fatalf("openrc does not name %s:\n%s", c.APIURL, rc)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(c.APIURL + "/v3")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), c.APIURL+"/v3") || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("GET /v3 over TLS: HTTP %d %s", resp.StatusCode, body)
	}
	plain := "http://" + strings.TrimPrefix(c.APIURL, "https://") + "/v3"
	if resp, err := http.Get(plain); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || strings.Contains(string(body), "/v3") {
			t.Fatalf("plain HTTP to the TLS API: HTTP %d %s", resp.StatusCode, body)
		}
	}
	old := &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}
	if _, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: old}}).Get(c.APIURL + "/v3"); err == nil {
		t.Fatal("a TLS 1.1 client was served")
	}

	for name, tc := range map[string]struct{ cert, key, says string }{
		"certificate without key": {certFile, "", "go together"},
		"key without certificate": {"", keyFile, "go together"},
		"missing key file":        {certFile, filepath.Join(dir, "nope.key"), "nope.key"},
		"key of the wrong kind":   {keyFile, certFile, "api.key"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := server.Start(context.Background(), server.Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0",
				Compute: noCompute{}, TLSCert: tc.cert, TLSKey: tc.key, Logger: slog.New(slog.DiscardHandler)})
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Start: %v, want an error saying %q", err, tc.says)
			}
		})
	}
}

// A default version without a default datastore is a configuration
// mistake: refused at start, naming the flags.
func TestADefaultVersionNeedsADefaultDatastore(t *testing.T) {
	_, err := server.Start(context.Background(), server.Config{
		StateDir: t.TempDir(), Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", Compute: noCompute{},
		DefaultDatastoreVersion: "10.11", Logger: slog.New(slog.DiscardHandler),
	})
	if err == nil || !strings.Contains(err.Error(), "--default-datastore-version needs --default-datastore") {
		t.Fatalf("start = %v", err)
	}
}
