package qemu

import (
	"os/exec"
	"testing"
	"time"
)

// procGone: a running process is not gone; one that was killed is, once
// it is a zombie (it has closed its files: qemu's disk locks with them),
// and so is one reaped. (A process that has only begun to exit has no
// command line yet still holds its files: the command line is no sign.)
func TestProcGoneWaitsForTheZombie(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if procGone(pid) {
		t.Fatal("a running process counts as gone")
	}
	cmd.Process.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for !procGone(pid) {
		if time.Now().After(deadline) {
			t.Fatal("a killed, unreaped process (a zombie) never counted as gone")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Wait()
	if !procGone(pid) {
		t.Fatal("a reaped process counts as running")
	}
}
