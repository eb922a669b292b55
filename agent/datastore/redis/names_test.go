package redis

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore"
	"strata/agent/wire"
)

func TestRenderACLKeepsUsersAndRenewsTheAgent(t *testing.T) {
	fresh := string(renderACL(nil, "one"))
	if !strings.HasPrefix(fresh, "user default off resetchannels ~* &* +@all\n") ||
		!strings.Contains(fresh, "user os_admin on "+passwordHash("one")+" ~* &* +@all\n") {
		t.Fatalf("fresh ACL file:\n%s", fresh)
	}
	old := "user default on #abc ~* &* +@all\nuser app on #def ~* &* +@all -@admin\nuser os_admin on " + passwordHash("one") + " ~* &* +@all\n"
	got := string(renderACL([]byte(old), "two"))
	want := "user default on #abc ~* &* +@all\nuser app on #def ~* &* +@all -@admin\nuser os_admin on " + passwordHash("two") + " ~* &* +@all\n"
	if got != want {
		t.Fatalf("rebuilt ACL file:\n%s\nwant:\n%s", got, want)
	}
	if passwordHash("password") != "#5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8" {
		t.Fatal(passwordHash("password"))
	}
}

func TestOverridesRoundTrip(t *testing.T) {
	settings := []datastore.Setting{
		{Name: "save", Type: "string", Text: "900 1 300 10"},
		{Name: "appendonly", Type: "boolean", Text: "ON", Bool: true},
		{Name: "maxmemory", Type: "integer", Text: "1048576"},
	}
	data := string(renderOverrides(settings))
	if !strings.Contains(data, "save \"900 1 300 10\"\nappendonly yes\nmaxmemory 1048576\n") {
		t.Fatalf("overrides:\n%s", data)
	}
	got := parseOverrides([]byte(data))
	if got["save"] != "900 1 300 10" || got["appendonly"] != "yes" || got["maxmemory"] != "1048576" {
		t.Fatalf("parsed = %v", got)
	}
}

// fakeServer answers one command with a canned reply: RESP decoding edge
// cases a real server will not produce on demand.
func fakeServer(t *testing.T, reply string) *Conn {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		r := bufio.NewReader(b)
		n := 0
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "*") {
				n++
				if n == 1 {
					go b.Write([]byte(reply))
				}
			}
		}
	}()
	t.Cleanup(func() { a.Close(); b.Close() })
	return &Conn{nc: a, r: bufio.NewReader(a), w: bufio.NewWriter(a), Timeout: 2 * time.Second}
}

func TestRESPReplies(t *testing.T) {
	ctx := context.Background()
	r, err := fakeServer(t, "*3\r\n$3\r\nabc\r\n:42\r\n$-1\r\n").Do(ctx, "X")
	if err != nil || len(r.Array) != 3 || r.Array[0].Str != "abc" || r.Array[1].Int != 42 || r.Array[2].Kind != 0 {
		t.Fatalf("%+v %v", r, err)
	}
	_, err = fakeServer(t, "-WRONGPASS invalid username-password pair\r\n").Do(ctx, "AUTH", "a", "b")
	if se, ok := err.(*ServerError); !ok || !strings.HasPrefix(se.Message, "WRONGPASS") {
		t.Fatalf("error reply: %v", err)
	}
	for _, bad := range []string{"$99999999999\r\n", "*-7\r\n", "?x\r\n", "+no CR\n", ":x\r\n"} {
		if _, err := fakeServer(t, bad).Do(ctx, "X"); err == nil {
			t.Fatalf("reply %q accepted", bad)
		}
	}
	// Arguments travel as bulk strings, whatever they contain.
	a, b := net.Pipe()
	defer a.Close()
	c := &Conn{nc: a, r: bufio.NewReader(a), w: bufio.NewWriter(a), Timeout: time.Second}
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 256)
		n, _ := b.Read(buf)
		got <- string(buf[:n])
		b.Write([]byte("+OK\r\n"))
	}()
	if _, err := c.Do(ctx, "SET", "k", "a b\r\n*1\r\n"); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9\r\na b\r\n*1\r\n\r\n" {
		t.Fatalf("sent %q", s)
	}
}

// No rule may name a parameter the agent manages: the configuration group
// would be refused whatever its value.
func TestRulesLeaveManagedParametersAlone(t *testing.T) {
	files, err := filepath.Glob("../../../validation-rules/redis-*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no validation-rules/redis-*.json: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rules, err := wire.ParseRules(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		checkRulesLeaveManagedParametersAlone(t, f, rules)
	}
}

func checkRulesLeaveManagedParametersAlone(t *testing.T, file string, rules []wire.ParameterRule) {
	t.Helper()
	for _, r := range rules {
		if !parameters.NameOK(r.Name) {
			t.Errorf("%s: rule %s names a parameter the agent manages (or an invalid name)", file, r.Name)
		}
	}
}
