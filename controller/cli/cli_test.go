package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"strata/controller/compute"
	"strata/controller/compute/qemu"
	"strata/controller/identity"
	"strata/controller/registry"
	"strata/controller/server"
	"strata/controller/store"
)

// strata runs the controller's commands as `strata` would.
func strata(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "strata", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(Commands()...)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func qcow2(t *testing.T) string {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img not found: install qemu-utils with `ci/deps.sh build`")
	}
	p := filepath.Join(t.TempDir(), "mariadb-10.11.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "16M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return p
}

// TestTroveManageEquivalents registers an image (checked against its
// .sha256), a datastore and a version from a recipe, loads rules, and
// sets the default — then checks bad input changes nothing.
func TestTroveManageEquivalents(t *testing.T) {
	state := t.TempDir()
	img := qcow2(t)
	data, _ := os.ReadFile(img)
	sum := sha256.Sum256(data)
	os.WriteFile(img+".sha256", []byte(hex.EncodeToString(sum[:])+"  mariadb-10.11.qcow2\n"), 0o644)

	out, err := strata(t, "image", "register", "--state-dir", state, img)
	if err != nil || !strings.Contains(out, "matches mariadb-10.11.qcow2.sha256") {
		t.Fatalf("image register: %v\n%s", err, out)
	}
	imageID := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])

	// A version of a datastore that does not exist yet is refused.
	if _, err := strata(t, "datastore", "version", "update", "--state-dir", state, "mariadb", "10.11", "--image", imageID,
		"--from-recipe", "../../images/mariadb-10.11.yaml"); err == nil {
		t.Fatal("version of a missing datastore accepted")
	}
	if out, err := strata(t, "datastore", "update", "--state-dir", state, "mariadb"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := strata(t, "datastore", "version", "update", "--state-dir", state, "mariadb", "10.11", "--image", "no-such-image"); err == nil ||
		!strings.Contains(err.Error(), "strata image register") {
		t.Fatalf("unknown image: %v %s", err, out)
	}
	if out, err := strata(t, "datastore", "version", "update", "--state-dir", state, "mariadb", "10.11", "--image", "mariadb-10.11",
		"--from-recipe", "../../images/mariadb-10.11.yaml", "--auth-plugin", "sha256_password"); err == nil || !strings.Contains(err.Error(), "auth plugin") {
		t.Fatalf("unknown auth plugin: %v %s", err, out)
	}
	out, err = strata(t, "datastore", "version", "update", "--state-dir", state, "mariadb", "10.11", "--image", "mariadb-10.11",
		"--from-recipe", "../../images/mariadb-10.11.yaml", "--root-on-create", "--auth-plugin", "ed25519")
	if err != nil || !strings.Contains(out, "manager mariadb") || !strings.Contains(out, "port 3306") || !strings.Contains(out, "root on create true") ||
		!strings.Contains(out, "auth plugin ed25519") {
		t.Fatalf("version update: %v\n%s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"configuration-parameters":[{"name":"x","type":"integer","min":10,"max":1}]}`), 0o644)
	if _, err := strata(t, "datastore", "version", "load-rules", "--state-dir", state, "mariadb", "10.11", bad); err == nil ||
		!strings.Contains(err.Error(), "min 10 is above max 1") {
		t.Fatalf("bad rules: %v", err)
	}
	out, err = strata(t, "datastore", "version", "load-rules", "--state-dir", state, "mariadb", "10.11", "../testdata/validation-rules/mariadb-10.11.json")
	if err != nil || !strings.Contains(out, "7 configuration parameters") {
		t.Fatalf("load-rules: %v\n%s", err, out)
	}
	if _, err := strata(t, "datastore", "update", "--state-dir", state, "mariadb", "10.11"); err != nil {
		t.Fatal(err)
	}
	if _, err := strata(t, "image", "delete", "--state-dir", state, imageID); err == nil {
		t.Fatal("deleting an image a version uses was accepted")
	}
	out, _ = strata(t, "datastore", "list", "--state-dir", state)
	if !strings.Contains(out, "mariadb    10.11") || !strings.Contains(out, "default") {
		t.Fatalf("datastore list:\n%s", out)
	}

	// The version's flavor list (trove-manage datastore_version_flavor_add
	// and _delete): none at first, then what is added; a missing flavor
	// adds nothing; removing one that is not listed is an error.
	if out, err := strata(t, "datastore", "version", "flavor", "list", "--state-dir", state, "mariadb", "10.11"); err != nil ||
		!strings.Contains(out, "every flavor is allowed") {
		t.Fatalf("flavor list at first: %v\n%s", err, out)
	}
	if out, err := strata(t, "datastore", "version", "flavor", "add", "--state-dir", state, "mariadb", "10.11", "strata.small", "strata.medium"); err != nil ||
		!strings.Contains(out, "strata.small") || !strings.Contains(out, "strata.medium") {
		t.Fatalf("flavor add: %v\n%s", err, out)
	}
	if _, err := strata(t, "datastore", "version", "flavor", "add", "--state-dir", state, "mariadb", "10.11", "strata.large", "strata.huge"); err == nil ||
		!strings.Contains(err.Error(), "strata.huge") {
		t.Fatalf("adding a missing flavor: %v", err)
	}
	if out, err := strata(t, "datastore", "version", "flavor", "delete", "--state-dir", state, "mariadb", "10.11", "strata.medium"); err != nil ||
		!strings.Contains(out, "strata.small") || strings.Contains(out, "strata.medium") || strings.Contains(out, "strata.large") {
		t.Fatalf("flavor delete: %v\n%s", err, out)
	}
	if _, err := strata(t, "datastore", "version", "flavor", "delete", "--state-dir", state, "mariadb", "10.11", "strata.medium"); err == nil ||
		!strings.Contains(err.Error(), "not in the flavor list") {
		t.Fatalf("deleting a flavor that is not listed: %v", err)
	}

	// Upgrade paths: none at first; one declared to a second version is
	// listed; one to the version itself is refused; deleting twice fails.
	if _, err := strata(t, "datastore", "version", "update", "--state-dir", state, "mariadb", "11.8", "--image", imageID,
		"--manager", "mariadb", "--port", "3306"); err != nil {
		t.Fatal(err)
	}
	if out, err := strata(t, "datastore", "version", "upgrade", "list", "--state-dir", state, "mariadb", "10.11"); err != nil ||
		!strings.Contains(out, "has no upgrade path") {
		t.Fatalf("upgrade list at first: %v\n%s", err, out)
	}
	if _, err := strata(t, "datastore", "version", "upgrade", "add", "--state-dir", state, "mariadb", "10.11", "10.11"); err == nil ||
		!strings.Contains(err.Error(), "to itself") {
		t.Fatalf("an upgrade path to the version itself: %v", err)
	}
	if out, err := strata(t, "datastore", "version", "upgrade", "add", "--state-dir", state, "mariadb", "10.11", "11.8"); err != nil ||
		!regexp.MustCompile(`10\.11\s+11\.8`).MatchString(out) {
		t.Fatalf("upgrade add: %v\n%s", err, out)
	}
	if out, err := strata(t, "datastore", "version", "upgrade", "delete", "--state-dir", state, "mariadb", "10.11", "11.8"); err != nil ||
		!strings.Contains(out, "has no upgrade path") {
		t.Fatalf("upgrade delete: %v\n%s", err, out)
	}
	if _, err := strata(t, "datastore", "version", "upgrade", "delete", "--state-dir", state, "mariadb", "10.11", "11.8"); err == nil ||
		!strings.Contains(err.Error(), "no upgrade path to 11.8") {
		t.Fatalf("deleting a path twice: %v", err)
	}

	db, err := server.OpenState(context.Background(), state, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, err := (&registry.Registry{DB: db}).FindVersion(context.Background(), "mariadb", "")
	if err != nil || v.ImageID != imageID || len(v.Rules) != 7 || v.BootTimeout != 900*time.Second || !v.Active || !v.RootOnCreate ||
		v.AuthPlugin != "ed25519" {
		t.Fatalf("registered version = %+v, %v", v, err)
	}
}

func TestImageRegisterRefusesAChecksumMismatch(t *testing.T) {
	state := t.TempDir()
	img := qcow2(t)
	os.WriteFile(img+".sha256", []byte(strings.Repeat("0", 64)+"  mariadb-10.11.qcow2\n"), 0o644)
	if _, err := strata(t, "image", "register", "--state-dir", state, img); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("mismatch: %v", err)
	}
	out, _ := strata(t, "image", "list", "--state-dir", state)
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("a refused image was listed:\n%s", out)
	}
}

func TestProjectsUsersAndFlavors(t *testing.T) {
	state := t.TempDir()
	if _, err := strata(t, "controller", "project", "create", "--state-dir", state, "team"); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("a-long-password\n"), 0o600)
	rc := filepath.Join(t.TempDir(), "openrc")
	if _, err := strata(t, "controller", "user", "create", "--state-dir", state, "alice", "--project", "team", "--password-file", pw, "--openrc", rc); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(rc)
	if !strings.Contains(string(data), "OS_USERNAME=alice") || !strings.Contains(string(data), "OS_PROJECT_NAME=team") {
		t.Fatalf("openrc:\n%s", data)
	}
	if _, err := strata(t, "controller", "flavor", "create", "--state-dir", state, "tiny2", "--ram", "512", "--vcpus", "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := strata(t, "controller", "flavor", "create", "--state-dir", state, "broken", "--ram", "1"); err == nil {
		t.Fatal("a 1 MB flavor was accepted")
	}
	out, _ := strata(t, "controller", "flavor", "list", "--state-dir", state)
	if !strings.Contains(out, "tiny2") || !strings.Contains(out, "strata.small") || strings.Contains(out, "broken") {
		t.Fatalf("flavor list:\n%s", out)
	}
}

// TestVMsStopPowersTheLocalVMsOff: the VMs outlive the controller, so
// stopping them is an explicit command.
func TestVMsStopPowersTheLocalVMsOff(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, "compute", "qemu")
	t.Cleanup(func() { qemu.KillUnder(dir) })
	d, err := qemu.New(context.Background(), qemu.Config{Dir: dir, DieWithController: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	const id = "0b6f3c8e-1f2a-4c3d-9e8f-00000000cc11"
	vol, err := d.CreateVolume(context.Background(), compute.VolumeSpec{InstanceID: id, SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateServer(context.Background(), compute.ServerSpec{InstanceID: id, Image: compute.ImageRef{Location: qcow2(t), Format: "qcow2"},
		RAMMB: 128, VCPUs: 1, Volume: vol, ConfigDrive: map[string][]byte{"x": []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	out, err := strata(t, "controller", "vms", "list", "--state-dir", state)
	if err != nil || !strings.Contains(out, id+"  current") {
		t.Fatalf("vms list: %v\n%s", err, out)
	}
	out, err = strata(t, "controller", "vms", "stop", "--state-dir", state, "--timeout", "0")
	if err != nil || !strings.Contains(out, "stopped 1 VM") {
		t.Fatalf("vms stop: %v\n%s", err, out)
	}
	if running := d.Running(); len(running) != 0 {
		t.Fatalf("still running after vms stop: %v", running)
	}
}

// TestTheSystemdUnitLeavesTheVMsAlone: stopping the controller's unit must
// signal the controller only, not the VMs in its cgroup.
func TestTheSystemdUnitLeavesTheVMsAlone(t *testing.T) {
	out, err := strata(t, "controller", "systemd-unit")
	if err != nil {
		t.Fatal(err)
	}
	var killMode string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "KillMode="); ok {
			killMode = v
		}
	}
	if killMode != "process" {
		t.Fatalf("KillMode=%q, want process", killMode)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		return // the unit's syntax is checked where systemd is installed
	}
	unit := filepath.Join(t.TempDir(), "strata-controller.service")
	os.WriteFile(unit, []byte(strings.Replace(out, "/usr/local/bin/strata", "/bin/true", 1)), 0o644)
	if o, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput(); err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, o)
	}
}

// TestNetworkListShowsTheDefaultNetworkAndItsClaims: the id a user passes
// as --nic net-id=, and how many addresses instances hold.
func TestNetworkListShowsTheDefaultNetworkAndItsClaims(t *testing.T) {
	state := t.TempDir()
	out, err := strata(t, "controller", "network", "list", "--state-dir", state)
	if err != nil || !strings.Contains(out, "5c1e8f2a-7b3d-4e6f-9a0b-1c2d3e4f5a6b  private  127.10.0.0/16  yes      0") {
		t.Fatalf("network list: %v\n%s", err, out)
	}
	claims := filepath.Join(server.LocalComputeDir(state), "networks", "5c1e8f2a-7b3d-4e6f-9a0b-1c2d3e4f5a6b")
	os.MkdirAll(claims, 0o700)
	os.WriteFile(filepath.Join(claims, "127.10.3.4"), []byte("0b6f3c8e-1f2a-4c3d-9e8f-0123456789ab\n"), 0o600)
	if out, err := strata(t, "controller", "network", "list", "--state-dir", state); err != nil || !strings.Contains(out, "yes      1") {
		t.Fatalf("network list with one claim: %v\n%s", err, out)
	}
}

// A user's lifecycle on the controller host: disable ends its sessions and
// its logins, set-password ends the sessions of the old one, delete
// removes it; a project is deleted once it owns nothing.
func TestUserLifecycleCommands(t *testing.T) {
	state := t.TempDir()
	if _, err := strata(t, "controller", "project", "create", "--state-dir", state, "team"); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("first-password\n"), 0o600)
	if _, err := strata(t, "controller", "user", "create", "--state-dir", state, "alice", "--project", "team", "--password-file", pw); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), server.DefaultDSN(state))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ids := &identity.Store{DB: db}
	login := func(password string) (string, error) {
		tok, _, err := ids.Issue(context.Background(), identity.Credentials{UserName: "alice", Password: password})
		return tok, err
	}
	tok, err := login("first-password")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := strata(t, "controller", "user", "disable", "--state-dir", state, "alice"); err != nil || !strings.Contains(out, "disabled user") {
		t.Fatalf("user disable: %s %v", out, err)
	}
	if _, err := ids.Authenticate(context.Background(), tok); err == nil {
		t.Fatal("a disabled user's token still authenticates")
	}
	if _, err := login("first-password"); err == nil {
		t.Fatal("a disabled user logged in")
	}
	if _, err := strata(t, "controller", "user", "enable", "--state-dir", state, "alice"); err != nil {
		t.Fatal(err)
	}
	if tok, err = login("first-password"); err != nil {
		t.Fatalf("re-enabled: %v", err)
	}
	os.WriteFile(pw, []byte("second-password\n"), 0o600)
	if _, err := strata(t, "controller", "user", "set-password", "--state-dir", state, "alice", "--password-file", pw); err != nil {
		t.Fatal(err)
	}
	if _, err := ids.Authenticate(context.Background(), tok); err == nil {
		t.Fatal("a token from before set-password still authenticates")
	}
	if _, err := login("second-password"); err != nil {
		t.Fatalf("the new password: %v", err)
	}
	os.WriteFile(pw, []byte("short\n"), 0o600)
	if out, err := strata(t, "controller", "user", "set-password", "--state-dir", state, "alice", "--password-file", pw); err == nil || !strings.Contains(out+err.Error(), "8 to 72") {
		t.Fatalf("a short password: %s %v", out, err)
	}
	if out, err := strata(t, "controller", "user", "disable", "--state-dir", state, "nobody"); err == nil || !strings.Contains(out+err.Error(), "not found") {
		t.Fatalf("disable an unknown user: %s %v", out, err)
	}
	if _, err := strata(t, "controller", "user", "delete", "--state-dir", state, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := login("second-password"); err == nil {
		t.Fatal("a deleted user logged in")
	}
	if out, err := strata(t, "controller", "project", "delete", "--state-dir", state, "team"); err != nil || !strings.Contains(out, "deleted project team") {
		t.Fatalf("project delete: %s %v", out, err)
	}
}

// TestServeRefusesBadQuotaFlags: a default quota is an integer of -1
// (unlimited) or more; anything else stops serve before it starts.
func TestServeRefusesBadQuotaFlags(t *testing.T) {
	for _, tc := range [][2]string{{"--quota-instances=-2", "below -1"}, {"--quota-volumes=lots", "want an integer"}} {
		out, err := strata(t, "controller", "serve", "--state-dir", t.TempDir(), tc[0])
		if err == nil || !strings.Contains(err.Error(), tc[1]) {
			t.Errorf("serve %s: %v\n%s", tc[0], err, out)
		}
	}
}
