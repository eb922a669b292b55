//go:build e2e

package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
	"strata/builder/disk"
	"strata/builder/manifest"
	"strata/builder/qemu"
)

// TestMariaDBImageAgentEnrollsOverSSHAndPreparesTheDataVolumeUnderUEFI
// builds images/mariadb-10.11.yaml (agent baked in) with the strata binary,
// boots it under UEFI firmware with a config drive carrying a bootstrap and
// a blank data disk, and proves from the host side of the wire: the agent
// started, read the config drive, dialled the test SSH endpoint on the host
// (10.0.2.2 from the guest), enrolled with the one-time token, sent
// heartbeats with its version, and ran prepare: the data disk was
// formatted and mounted (inside the unit's sandbox) and MariaDB came up.
func TestMariaDBImageAgentEnrollsOverSSHAndPreparesTheDataVolumeUnderUEFI(t *testing.T) {
	out := t.TempDir()
	img := filepath.Join(out, "mariadb")
	run(t, nil, "build", "-f", "images/mariadb-10.11.yaml", "-o", img, "--image-cache", cache)
	m, err := manifest.Read(img + ".manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	agentBin, err := os.ReadFile(filepath.Join(repo, "bin", "strata-agent"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Agent == nil || m.Agent.SHA256 != sha256Hex(agentBin) {
		t.Fatalf("manifest agent = %+v, want the digest of bin/strata-agent", m.Agent)
	}

	// The controller side: a wire endpoint with a memory store on the
	// host's loopback, which qemu's user network shows the guest as 10.0.2.2.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	store := wire.NewMemStore()
	const instance = "e2e-agent-0001"
	token := wire.NewEnrollmentToken()
	store.AddInstance(instance, token)
	srv, err := wire.NewServer(wire.ServerConfig{HostKey: hostKey, Store: store, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	go srv.Serve(ctx, ln)
	port := ln.Addr().(*net.TCPAddr).Port

	boot := wire.Bootstrap{
		Format: 1, InstanceID: instance, Controllers: []string{"10.0.2.2:" + itoa(port)},
		ControllerHostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey.PublicKey()))),
		EnrollmentToken:   token,
		Datastore:         wire.DatastoreRef{Manager: "mariadb", Version: "10.11"},
		HeartbeatSeconds:  5,
		DataDevice:        "/dev/disk/by-id/virtio-strata-data",
	}
	bj, _ := json.Marshal(boot)
	cd := filepath.Join(out, "config-drive.img")
	if err := disk.WriteConfigDrive(ctx, cd, disk.LabelConfigDrive, map[string][]byte{"strata/bootstrap.json": bj}); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(out, "data.raw")
	if err := os.WriteFile(data, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(data, 1<<30); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	vm, err := qemu.Start(ctx, qemu.Config{
		Name: "strata-e2e-agent", Disk: qemu.Drive{Path: img + ".qcow2", Format: "qcow2", Snapshot: true},
		Drives: []qemu.Drive{
			{Path: cd, Format: "raw", ReadOnly: true, Serial: "config-drive"},
			{Path: data, Format: "raw", Serial: "strata-data"},
		},
		Firmware: qemu.UEFI, MemoryMiB: 1024, CPUs: 2, NoReboot: true,
		SerialLog: filepath.Join(out, "serial.log"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		vm.Stop(30 * time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(out, "serial.log"))
			t.Logf("serial console:\n%s", tail(string(b), 80))
		}
	}()
	if _, err := vm.WaitForSerial(ctx, regexp.MustCompile(`strata-config-drive: copied`)); err != nil {
		t.Fatalf("config drive not read: %v", err)
	}
	t.Logf("config drive read after %.1fs", time.Since(start).Seconds())

	// Enrollment: the token is redeemed once and the agent's key bound.
	waitFor(t, ctx, "the agent to enroll and heartbeat", func() bool {
		return store.Redemptions() == 1 && len(store.Keys(instance)) == 1 && len(store.Heartbeats(instance)) > 0
	})
	hb := store.Heartbeats(instance)[0]
	t.Logf("enrolled, first heartbeat after %.1fs: version %q status %s", time.Since(start).Seconds(), hb.AgentVersion, hb.Status)
	if hb.AgentVersion == "" || hb.BootID == "" {
		t.Errorf("heartbeat lacks version or boot id: %+v", hb)
	}

	// prepare: format + mount the data disk through systemd, initialise
	// MariaDB, start it; then a database and a user.
	prep, _ := json.Marshal(wire.PrepareArgs{
		MemoryMB:  1024,
		Databases: []wire.Database{{Name: "e2e"}},
		Users:     []wire.User{{Name: "app", Host: "%", Password: "e2e-Password-1", Databases: []string{"e2e"}}},
	})
	op := wire.Operation{ID: "prepare-1", Kind: wire.KindPrepare, Args: prep}
	if err := srv.Submit(ctx, instance, op); err != nil {
		t.Fatal(err)
	}
	res, err := srv.Await(ctx, instance, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		t.Fatalf("prepare failed: %+v", res.Error)
	}
	var pr wire.PrepareResult
	if err := res.Decode(&pr); err != nil || !pr.Formatted || !pr.Initialized {
		t.Fatalf("prepare result = %+v, %v: want the blank disk formatted and MariaDB initialised", pr, err)
	}
	t.Logf("prepared after %.1fs", time.Since(start).Seconds())
	waitFor(t, ctx, "a heartbeat reporting running with the data volume", func() bool {
		hbs := store.Heartbeats(instance)
		last := hbs[len(hbs)-1]
		return last.Status == wire.StatusRunning && last.Volume != nil && last.Volume.TotalBytes > 900<<20
	})
	list := wire.Operation{ID: "list-dbs-1", Kind: wire.KindListDatabases, Args: json.RawMessage(`{}`)}
	if err := srv.Submit(ctx, instance, list); err != nil {
		t.Fatal(err)
	}
	res, err = srv.Await(ctx, instance, list.ID)
	if err != nil || !res.OK() {
		t.Fatalf("list_databases: %v %+v", err, res.Error)
	}
	var dbs wire.ListDatabasesResult
	if err := res.Decode(&dbs); err != nil {
		t.Fatalf("list_databases result: %v", err)
	}
	found := false
	for _, d := range dbs.Databases {
		found = found || d.Name == "e2e"
	}
	if !found {
		t.Fatalf("database e2e not listed: %+v", dbs)
	}
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Logf("%s", p); return len(p), nil }
