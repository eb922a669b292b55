package systemd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// systemctl is replaced by a script that records its arguments and fails
// on "stop": what is tested is the command line and the error report.
func TestUnitRunsSystemctl(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	script := filepath.Join(dir, "systemctl")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$*\" >> "+log+"\n[ \"$SYSTEMCTL_SKIP_SYSV\" = 1 ] || { echo 'would run update-rc.d' >&2; exit 4; }\n[ \"$1\" = stop ] && { echo 'Unit is busy' >&2; exit 3; }\nexit 0\n"), 0o755)
	u := Unit{Name: "mariadb.service", Systemctl: script}
	ctx := context.Background()
	if err := u.Start(ctx); err != nil {
		t.Fatal(err)
	}
	u.Enable(ctx)
	u.Restart(ctx)
	u.DaemonReload(ctx)
	err := u.Stop(ctx)
	if err == nil || !strings.Contains(err.Error(), "Unit is busy") || !strings.Contains(err.Error(), "stop -- mariadb.service") {
		t.Fatalf("stop error = %v", err)
	}
	data, _ := os.ReadFile(log)
	want := "start -- mariadb.service\nenable -- mariadb.service\nrestart -- mariadb.service\ndaemon-reload\nstop -- mariadb.service\n"
	if string(data) != want {
		t.Fatalf("calls:\n%s", data)
	}
}
