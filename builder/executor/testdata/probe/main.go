// Command probe is copied into a fake image root by the executor tests and
// reports what it sees from inside the sandbox.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	switch os.Args[1] {
	case "report":
		cwd, _ := os.Getwd()
		hooks, _ := os.ReadFile("/tmp/in_target.d/marker")
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		var mounts []string
		for _, l := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(l); len(f) > 4 {
				mounts = append(mounts, f[4])
			}
		}
		init, _ := os.ReadFile("/proc/1/cmdline")
		werr := os.WriteFile("/tmp/in_target.d/write-test", []byte("x"), 0o644)
		json.NewEncoder(os.Stdout).Encode(map[string]any{
			"pid": os.Getpid(), "init": strings.TrimRight(string(init), "\x00"), "cwd": cwd, "env": os.Environ(), "marker": string(hooks),
			"mounts": mounts, "hooks_writable": werr == nil,
		})
	case "exit":
		n, _ := strconv.Atoi(os.Args[2])
		fmt.Fprintln(os.Stderr, "probe exiting with", n)
		os.Exit(n)
	case "spawn-and-sleep":
		// A grandchild in its own session, as a daemon would be.
		c := exec.Command(os.Args[0], "sleep")
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := c.Start(); err != nil {
			panic(err)
		}
		os.WriteFile(os.Args[2], []byte(strconv.Itoa(c.Process.Pid)), 0o644)
		fmt.Println("spawned")
		time.Sleep(time.Hour)
	case "sleep":
		time.Sleep(time.Hour)
	case "mount-tmpfs":
		if err := syscall.Mount("tmpfs", os.Args[2], "tmpfs", 0, ""); err != nil {
			panic(err)
		}
	}
}
