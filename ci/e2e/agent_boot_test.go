//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
	"strata/builder/boottest"
	"strata/builder/cli"
	"strata/builder/manifest"
	"strata/builder/qemu"
	"strata/controller/agentendpoint"
)

// TestMariaDBImageAgentEnrollsOverSSHAndPreparesTheDataVolumeUnderUEFI
// builds images/mariadb-10.11.yaml (agent baked in) with the strata binary,
// boots it under UEFI firmware with a config drive carrying a bootstrap and
// a blank data disk, and proves from the host side of the wire: the agent
// started, read the config drive, dialled the SSH endpoint on the host
// (10.0.2.2 from the guest), enrolled with the one-time token, sent
// heartbeats with its version, and ran prepare: the data disk was
// formatted and mounted (inside the unit's sandbox), MariaDB came up on it
// with the requested database.
func TestMariaDBImageAgentEnrollsOverSSHAndPreparesTheDataVolumeUnderUEFI(t *testing.T) {
	// Light (one VM at most): runs beside the other light tests, after
	// the heavy ones (the package comment says why).
	t.Parallel()
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
	if m.Datastore == nil || m.Datastore.Manager != "mariadb" || m.Datastore.Version != "10.11" {
		t.Fatalf("manifest datastore = %+v", m.Datastore)
	}

	prep := cli.DefaultPrepare("mariadb")
	var listed []string
	r, err := boottest.Agent(context.Background(), boottest.Options{
		Image: img + ".qcow2", Firmware: qemu.UEFI, Timeout: 15 * time.Minute, WorkDir: out,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}, boottest.AgentOptions{
		Manager: "mariadb", Version: "10.11", Prepare: prep,
		// A fixed address, as Nova gives on a network without DHCP: the
		// agent reaches its controller only if strata-network.service
		// configured it (the unit it writes turns DHCP off).
		NetworkData: []byte(`{"links": [{"id": "tap0", "type": "bridge", "mtu": 1500, "ethernet_mac_address": "` + boottest.GuestMAC + `"}],
		  "networks": [{"id": "network0", "type": "ipv4", "link": "tap0", "ip_address": "10.0.2.77", "netmask": "255.255.255.0",
		    "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.2"}]}],
		  "services": [{"type": "dns", "address": "10.0.2.3"}]}`),
		NewEndpoint: func(hostKey ssh.Signer, log *slog.Logger) (boottest.Endpoint, error) {
			ep, err := agentendpoint.NewMemEndpoint(hostKey, log)
			if err != nil {
				return nil, err
			}
			return ep, nil
		},
		Check: func(ctx context.Context, ep boottest.Endpoint, id string) error {
			op := wire.Operation{ID: "list-dbs-1", Kind: wire.KindListDatabases, Args: json.RawMessage(`{}`)}
			if err := ep.Submit(ctx, id, op); err != nil {
				return err
			}
			res, err := ep.Await(ctx, id, op.ID)
			if err != nil {
				return err
			}
			var dbs wire.ListDatabasesResult
			if err := res.Decode(&dbs); err != nil {
				return fmt.Errorf("list_databases: %v (%+v)", err, res.Error)
			}
			for _, d := range dbs.Databases {
				listed = append(listed, d.Name)
			}
			return nil
		},
	})
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(out, "uefi.serial.log"))
		t.Fatalf("%v\nserial console:\n%s", err, tail(string(b), 80))
	}
	serial, _ := os.ReadFile(filepath.Join(out, "uefi.serial.log"))
	if want := "10-strata-netdata-525400123456.network: link tap0 (" + boottest.GuestMAC + "): 10.0.2.77/24"; !strings.Contains(string(serial), want) {
		t.Errorf("the serial console does not show strata-network.service writing %q", want)
	}
	t.Logf("config drive read %.1fs, enrolled %.1fs, prepared %.1fs, running %.1fs (%s)", r.ConfigDrive, r.Enrolled, r.Prepared, r.Running, r.Accel)
	if r.Redemptions != 1 || r.EnrolledKeys != 1 {
		t.Errorf("token redeemed %d times, %d keys enrolled: want exactly one of each", r.Redemptions, r.EnrolledKeys)
	}
	if r.AgentVersion == "" || r.FirstHeartbeat.BootID == "" {
		t.Errorf("heartbeat lacks version or boot id: %+v", r.FirstHeartbeat)
	}
	if r.Prepare == nil || !r.Prepare.Formatted || !r.Prepare.Initialized {
		t.Errorf("prepare result = %+v: want the blank disk formatted and MariaDB initialised", r.Prepare)
	}
	// The 1 GiB data disk, mounted (not the ~1.9 GiB root filesystem).
	if v := r.LastHeartbeat.Volume; v == nil || v.TotalBytes < 900<<20 || v.TotalBytes > 1<<30 {
		t.Errorf("heartbeat volume = %+v: want the 1 GiB data disk mounted", v)
	}
	found := false
	for _, n := range listed {
		found = found || n == "boottest"
	}
	if !found {
		t.Errorf("database boottest not listed: %v", listed)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Logf("%s", p); return len(p), nil }
