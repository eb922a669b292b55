package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
