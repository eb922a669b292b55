package qemu_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"strata/controller/compute"
	"strata/controller/compute/qemu"
)

// prefixServer stands in for a source's forwarded datastore port: it
// answers every connection with its name, then echoes.
func prefixServer(t *testing.T, name string) *net.TCPAddr {
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
			go func() { defer c.Close(); io.WriteString(c, name+":"); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// viaGuestForward runs the command qemu hands a guest's connection to
// PeerAddr:port to (taken from the running VM's command line), as qemu
// does: the connection is its stdin and stdout. It sends a line and
// returns what came back and the command's error output.
func viaGuestForward(t *testing.T, netdev string, port int) (string, string, error) {
	t.Helper()
	key := "guestfwd=tcp:" + qemu.PeerAddr + ":" + strconv.Itoa(port) + "-cmd:"
	i := strings.Index(netdev, key)
	if i < 0 {
		t.Fatalf("-netdev %q: no opening at %s:%d", netdev, qemu.PeerAddr, port)
	}
	words := strings.Fields(strings.SplitN(netdev[i+len(key):], ",", 2)[0])
	cmd := exec.Command(words[0], words[1:]...)
	cmd.Stdin = strings.NewReader("ping\n")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), errOut.String(), err
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the relay of %s:%d did not end", qemu.PeerAddr, port)
	}
	return "", "", nil
}

// TestAReplicaReachesItsSourceThroughTheFencesSecondOpening: a VM started
// with a relay program has, beside its way to the agent endpoint, one
// opening per datastore port at PeerAddr; it leads nowhere until
// ReplicationRoute names a source, then to that source's forwarded port,
// and to another source as soon as the route is set again (read at every
// connection). Routes the driver cannot make are refused naming why.
// (The guest's side, a MariaDB replica connecting to PeerAddr:3306, is
// the end-to-end test's: ci/e2e TestReplicasOfAMariaDBInstance....)
func TestAReplicaReachesItsSourceThroughTheFencesSecondOpening(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t.Cleanup(func() { qemu.KillUnder(dir) })
	d := driverOn(t, dir, qemu.Config{AgentEndpoint: "127.0.0.1:42223", RelayCommand: []string{os.Args[0], "publish-relay"}})
	const replica = "7d2e1f30-8b9c-4d0e-9f10-23456789abcd"
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: replica, Name: "r", SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateServer(ctx, compute.ServerSpec{InstanceID: replica, Name: "r", Image: blankImage(t), RAMMB: 256, VCPUs: 1, RootDiskGB: 1, Volume: vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{"format":1}`)}, Ports: []int{3306}}); err != nil {
		t.Fatal(err)
	}
	netdev := netdevOf(t, replica)
	if n := strings.Count(netdev, "guestfwd="); n != 2 || !strings.Contains(netdev, ",guestfwd=tcp:10.0.2.100:42223-cmd:") {
		t.Fatalf("-netdev %q: want the endpoint's way and one opening for port 3306 (%d guest forwards)", netdev, n)
	}

	// No source yet: the guest's connection is closed with not a word on
	// it (qemu hands the relay the connection as its stderr too); the
	// relay says why in its log in the instance directory.
	out, stderr, err := viaGuestForward(t, netdev, 3306)
	log, _ := os.ReadFile(filepath.Join(dir, replica, "peer-relay.log"))
	if err == nil || out != "" || stderr != "" || !strings.Contains(string(log), "no replication source is set") {
		t.Fatalf("opening without a source: out %q, err %v, stderr %q, log %q", out, err, stderr, log)
	}

	// Two sources, recorded as servers whose forwarded port is a plain
	// listener here.
	a, b := prefixServer(t, "A"), prefixServer(t, "B")
	const srcA, srcB = "9a0b1c2d-3e4f-4a5b-8c6d-7e8f90a1b2c3", "1b2c3d4e-5f60-4718-293a-4b5c6d7e8f90"
	for id, addr := range map[string]*net.TCPAddr{srcA: a, srcB: b} {
		if err := d.WriteServer(id, "127.0.0.1", []compute.Endpoint{{GuestPort: 3306, Host: "127.0.0.1", Port: addr.Port}}); err != nil {
			t.Fatal(err)
		}
	}
	host, port, err := d.ReplicationRoute(ctx, compute.Server{ID: replica}, compute.Server{ID: srcA}, "127.0.0.1", a.Port)
	if err != nil || host != qemu.PeerAddr || port != 3306 {
		t.Fatalf("ReplicationRoute to A = %s:%d, %v", host, port, err)
	}
	if out, stderr, err := viaGuestForward(t, netdev, 3306); out != "A:ping\n" || err != nil {
		t.Fatalf("through the opening to A: %q, %v, %s", out, err, stderr)
	}
	// The source named by its guest port (its clients' address unknown
	// to the driver) is found too; the next connection reaches B.
	if _, _, err := d.ReplicationRoute(ctx, compute.Server{ID: replica}, compute.Server{ID: srcB}, "10.9.9.9", 3306); err != nil {
		t.Fatal(err)
	}
	if out, stderr, err := viaGuestForward(t, netdev, 3306); out != "B:ping\n" || err != nil {
		t.Fatalf("through the opening after the route moved to B: %q, %v, %s", out, err, stderr)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, replica, "replication-source")); string(data) != "3306 127.0.0.1:"+strconv.Itoa(b.Port)+"\n" {
		t.Fatalf("replication-source = %q", data)
	}

	for name, c := range map[string]struct {
		replica, source string
		port            int
		want            string
	}{
		"unknown source":         {replica, "2c3d4e5f-6071-4829-3a4b-5c6d7e8f9011", 3306, "replication source"},
		"source without port":    {replica, srcA, 5432, "no forwarded port"},
		"replica without server": {"3d4e5f60-7182-4930-4b5c-6d7e8f901122", srcA, 3306, "replica"},
		"hostile id":             {"../../etc", srcA, 3306, "instance id"},
	} {
		if _, _, err := d.ReplicationRoute(ctx, compute.Server{ID: c.replica}, compute.Server{ID: c.source}, "127.0.0.1", c.port); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, c.want)
		}
	}
	// A driver without a relay program gives no opening and says so.
	bare := driverOn(t, dir, qemu.Config{AgentEndpoint: "127.0.0.1:42223"})
	if _, _, err := bare.ReplicationRoute(ctx, compute.Server{ID: replica}, compute.Server{ID: srcA}, "127.0.0.1", a.Port); err == nil || !strings.Contains(err.Error(), "relay program") {
		t.Fatalf("route without a relay program: %v", err)
	}

	// Deleting the replica leaves nothing of it, its route included.
	if err := d.DeleteServer(ctx, compute.Server{ID: replica}); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(filepath.Join(dir, replica)); !os.IsNotExist(err) {
		t.Fatalf("the deleted replica's directory is still there: %v %v", entries, err)
	}
}
