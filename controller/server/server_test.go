package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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
