package qemu_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"strata/controller/compute"
	"strata/controller/compute/qemu"
)

// TestMain lets this test binary be the publish relay the driver starts
// (what `strata controller publish-relay` is in a real controller).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "publish-relay" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		if err := qemu.RunRelay(ctx, os.Args[2:], slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// echoServer stands in for a guest's forwarded database port: it echoes
// what it reads.
func echoServer(t *testing.T) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// exchange connects to addr from source (a loopback address the client
// binds), sends a line and returns what came back: "" when the server
// closed the connection without answering.
func exchange(t *testing.T, source, addr string) (string, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return "", nil // closed already: refused
	}
	buf := make([]byte, 5)
	n, _ := io.ReadFull(c, buf)
	return string(buf[:n]), nil
}

func publicPool() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{127, byte(190 + rand.IntN(50)), byte(rand.IntN(256)), byte(rand.IntN(32) * 8)}), 29).Masked()
}

// TestAPublicInstanceIsPublishedOnlyToItsAllowedCIDRs: the publisher on
// its own (no VM: a listener stands in for the guest's forward). A client
// from inside allowed_cidrs gets through at the public address and the
// standard port; one from outside is cut off; changing the CIDRs takes
// effect without a new relay; a killed relay comes back; going private
// removes the publication and gives the address back.
func TestAPublicInstanceIsPublishedOnlyToItsAllowedCIDRs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pool := publicPool()
	d := driverOn(t, dir, qemu.Config{PublicAddresses: []netip.Prefix{pool}, RelayCommand: []string{os.Args[0], "publish-relay"}})
	guest := echoServer(t)
	// The "standard port" of this test's datastore: one free on the pool.
	stdPort := freeTCPPort(t)
	if err := d.WriteServer(id, "127.0.0.1", []compute.Endpoint{{GuestPort: stdPort, Host: "127.0.0.1", Port: guest.Port}}); err != nil {
		t.Fatal(err)
	}
	srv := compute.Server{ID: id}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, id, "publish.log"))
			t.Logf("publish.log:\n%s", b)
		}
		d.DeleteServer(ctx, srv)
	})

	got, err := d.Publish(ctx, srv, []int{stdPort}, compute.Access{Public: true, AllowedCIDRs: []string{"127.0.0.1/32"}})
	if err != nil {
		t.Fatal(err)
	}
	var public string
	for _, a := range got.Addresses {
		if a.Type == "public" {
			public = a.Address
		}
	}
	if a, err := netip.ParseAddr(public); err != nil || !pool.Contains(a) {
		t.Fatalf("addresses %+v: want a public one from %s", got.Addresses, pool)
	}
	target := net.JoinHostPort(public, fmt.Sprint(stdPort))
	if reply, err := exchange(t, "127.0.0.1", target); err != nil || reply != "ping\n" {
		t.Fatalf("from 127.0.0.1 (allowed): %q, %v; want the instance's answer", reply, err)
	}
	if reply, err := exchange(t, "127.0.0.2", target); err != nil || reply != "" {
		t.Fatalf("from 127.0.0.2 (outside 127.0.0.1/32): %q, %v; want the connection closed unanswered", reply, err)
	}
	log, _ := os.ReadFile(filepath.Join(dir, id, "publish.log"))
	if !strings.Contains(string(log), "127.0.0.2") {
		t.Errorf("publish.log does not name the refused client:\n%s", log)
	}

	// New CIDRs: the same relay, the same address, the other client.
	pid, ok := d.RelayPID(id)
	if !ok {
		t.Fatal("no relay running")
	}
	if got, err = d.Publish(ctx, srv, []int{stdPort}, compute.Access{Public: true, AllowedCIDRs: []string{"127.0.0.2/32"}}); err != nil {
		t.Fatal(err)
	}
	if pid2, _ := d.RelayPID(id); pid2 != pid || got.Addresses[len(got.Addresses)-1].Address != public {
		t.Fatalf("after a CIDR change: relay %d (was %d), addresses %+v (was %s)", pid2, pid, got.Addresses, public)
	}
	if reply, _ := exchange(t, "127.0.0.1", target); reply != "" {
		t.Fatalf("from 127.0.0.1, no longer allowed: %q", reply)
	}
	if reply, err := exchange(t, "127.0.0.2", target); err != nil || reply != "ping\n" {
		t.Fatalf("from 127.0.0.2, now allowed: %q, %v", reply, err)
	}

	// A relay that died (host restart, kill) is started again by recovery.
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(t, pid)
	if err := d.KeepPublished(id); err != nil {
		t.Fatal(err)
	}
	if reply, err := exchange(t, "127.0.0.2", target); err != nil || reply != "ping\n" {
		t.Fatalf("after the relay was started again: %q, %v", reply, err)
	}

	// Private: nothing listens there any more; the address is free.
	if got, err = d.Publish(ctx, srv, nil, compute.Access{}); err != nil {
		t.Fatal(err)
	}
	for _, a := range got.Addresses {
		if a.Type == "public" {
			t.Fatalf("a private server lists %+v", got.Addresses)
		}
	}
	if _, err := exchange(t, "127.0.0.2", target); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connecting to the unpublished address: %v, want connection refused", err)
	}
	if claims, _ := d.PublicClaims(); len(claims) != 0 {
		t.Fatalf("public claims after going private: %v", claims)
	}

	// Public again, then deleted: relay and claim go with the server.
	if _, err := d.Publish(ctx, srv, nil, compute.Access{Public: true}); err != nil {
		t.Fatal(err)
	}
	pid, _ = d.RelayPID(id)
	if err := d.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(b), "publish-relay") {
			t.Fatalf("relay %d outlived DeleteServer", pid)
		}
	}
	if claims, _ := d.PublicClaims(); len(claims) != 0 {
		t.Fatalf("public claims after delete: %v", claims)
	}
}

// waitGone waits for the killed relay to be gone, its sockets with it
// (this process started it, so reaps it).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for range 500 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the killed relay is still there")
}

func freeTCPPort(t *testing.T) int {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestPublicIsRefusedWithoutPublicAddresses: no pool, no publication, and
// the refusal names the option.
func TestPublicIsRefusedWithoutPublicAddresses(t *testing.T) {
	d, _ := newDriver(t)
	err := d.CheckAccess(context.Background(), compute.Access{Public: true})
	if !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), "--public-addresses") {
		t.Fatalf("public without a pool: %v", err)
	}
	if err := d.CheckAccess(context.Background(), compute.Access{AllowedCIDRs: []string{"10.0.0.0/8"}}); err != nil {
		t.Fatalf("private: %v", err)
	}
	if _, err := qemu.New(context.Background(), qemu.Config{Dir: t.TempDir(), PublicAddresses: []netip.Prefix{netip.MustParsePrefix("127.10.0.0/24")},
		RelayCommand: []string{"x"}}); err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("a pool inside the default network: %v", err)
	}
	if _, err := qemu.ParsePublicAddresses("127.200.0.0/16, 192.0.2.7"); err != nil {
		t.Fatal(err)
	}
	if _, err := qemu.ParsePublicAddresses("127.200.0.0/16,nonsense"); err == nil || !strings.Contains(err.Error(), "nonsense") {
		t.Fatalf("a bad pool entry: %v", err)
	}
}

// TestAPublicationThatCannotStartLeavesNothing: a relay that exits at once
// fails the change, naming its log, and leaves the instance as it was:
// private, no address claimed, no allow file.
func TestAPublicationThatCannotStartLeavesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := driverOn(t, dir, qemu.Config{PublicAddresses: []netip.Prefix{publicPool()}, RelayCommand: []string{"/bin/false"}})
	guest := echoServer(t)
	if err := d.WriteServer(id, "127.0.0.1", []compute.Endpoint{{GuestPort: freeTCPPort(t), Host: "127.0.0.1", Port: guest.Port}}); err != nil {
		t.Fatal(err)
	}
	_, err := d.Publish(ctx, compute.Server{ID: id}, nil, compute.Access{Public: true})
	if err == nil || !strings.Contains(err.Error(), "exited at once") || !strings.Contains(err.Error(), "publish.log") {
		t.Fatalf("publishing with a relay that cannot run: %v", err)
	}
	if claims, _ := d.PublicClaims(); len(claims) != 0 {
		t.Fatalf("claims left: %v", claims)
	}
	if _, err := os.Stat(filepath.Join(dir, id, "public.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("public.json left: %v", err)
	}
	if st, err := d.ServerState(ctx, compute.Server{ID: id}); err != nil || st != compute.StateStopped {
		t.Fatalf("server state %v, %v", st, err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, id, "server.json"))
	if strings.Contains(string(data), `"public"`) {
		t.Fatalf("server.json records a publication:\n%s", data)
	}
}
