package mariadb

import (
	"os"
	"path/filepath"
	"testing"
)

// mariadb-backup 11.x (trixie's 11.8) names its metadata files
// mariadb_backup_*, 10.11 (bookworm's) xtrabackup_*: the agent reads
// whichever the tool wrote. The backup tests run both for real (the host's
// 10.11; trixie's 11.8 under make test-trixie-agent).
func TestBackupMetaFileTakesEitherToolsName(t *testing.T) {
	for _, name := range []string{"mariadb_backup_checkpoints", "xtrabackup_checkpoints"} {
		dir := t.TempDir()
		want := filepath.Join(dir, name)
		if err := os.WriteFile(want, []byte("to_lsn = 1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := backupMetaFile(dir, "checkpoints"); got != want {
			t.Fatalf("with %s: %s", name, got)
		}
	}
	if got := backupMetaFile(t.TempDir(), "info"); filepath.Base(got) != "mariadb_backup_info" {
		t.Fatalf("with neither: %s, want the newer name for the error", got)
	}
}
