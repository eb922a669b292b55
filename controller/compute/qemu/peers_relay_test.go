package qemu_test

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A replica's relay is handed the guest's connection by qemu as its
// stdin, stdout and stderr alike. Whatever happens to its source — gone
// before the connection, or gone in the middle of the stream — the guest
// reads the source's bytes and nothing else (a word of the relay's own
// there reached a Redis replica as a line of its source's stream, and
// the replica forgot its position: a failover could then not promote
// it); the relay's messages go to its log in the instance directory.
func TestAPeerRelayWritesNothingOfItsOwnToTheGuest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// source returns the source's address; sends is what it sent
		// before it went away ("" for none).
		source func(t *testing.T) (addr, sends string)
		logs   string
	}{
		{"source refusing connections", func(t *testing.T) (string, string) {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			return addr, ""
		}, "connection refused"},
		{"source reset in the middle of the stream", func(t *testing.T) (string, string) {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("*1\r\n$4\r\nPING\r\n"))
				time.Sleep(200 * time.Millisecond)
				c.(*net.TCPConn).SetLinger(0) // a reset, as a killed VM's forward gives
				c.Close()
			}()
			return ln.Addr().String(), "*1\r\n$4\r\nPING\r\n"
		}, "connection reset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			addr, sends := tc.source(t)
			route := filepath.Join(dir, "replication-source")
			if err := os.WriteFile(route, []byte("6379 "+addr+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			guest, relayEnd := os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "relay")
			defer guest.Close()
			cmd := exec.Command(os.Args[0], "publish-relay", "--peer", route, "--port", "6379")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = relayEnd, relayEnd, relayEnd // as qemu's guestfwd hands it over
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			relayEnd.Close()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			guest.SetReadDeadline(time.Now().Add(20 * time.Second))
			got, err := io.ReadAll(guest)
			if err != nil {
				t.Fatalf("reading the guest's end: %v (got %q)", err, got)
			}
			if string(got) != sends {
				t.Fatalf("the guest read %q; the source sent %q", got, sends)
			}
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				t.Fatal("the relay did not end once its source was gone")
			}
			log, err := os.ReadFile(filepath.Join(dir, "peer-relay.log"))
			if err != nil || !strings.Contains(string(log), "peer relay") || !strings.Contains(string(log), tc.logs) {
				t.Fatalf("the relay's log: %q (%v), want its error, %q", log, err, tc.logs)
			}
		})
	}
}
