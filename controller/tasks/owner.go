package tasks

import (
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// A lease owner names the engine that holds a task, precisely enough that
// another engine on the same host can tell whether it still lives:
//
//	host=<hostname>;boot=<kernel boot id>;pidns=<pid namespace>;pid=<pid>;start=<start time>;engine=<random>
//
// The start time (in clock ticks since boot, /proc/<pid>/stat) tells a
// reused pid from the owner. An engine on another host, another boot or
// another pid namespace cannot be checked: its leases end when they
// expire, as before.
type ownerID struct {
	host, boot, pidns string
	pid               int
	start             string
	engine            string
}

func (o ownerID) String() string {
	return fmt.Sprintf("host=%s;boot=%s;pidns=%s;pid=%d;start=%s;engine=%s", o.host, o.boot, o.pidns, o.pid, o.start, o.engine)
}

func parseOwner(s string) (ownerID, bool) {
	var o ownerID
	for _, kv := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return o, false
		}
		switch k {
		case "host":
			o.host = v
		case "boot":
			o.boot = v
		case "pidns":
			o.pidns = v
		case "pid":
			n, err := strconv.Atoi(v)
			if err != nil {
				return o, false
			}
			o.pid = n
		case "start":
			o.start = v
		case "engine":
			o.engine = v
		}
	}
	return o, o.host != "" && o.boot != "" && o.pid > 0 && o.start != "" && o.engine != ""
}

// liveness is what this process can tell about a lease owner.
type liveness int

const (
	// unknown: another host, boot or pid namespace (or a name that is not
	// an ownerID): only the lease's expiry tells.
	unknown liveness = iota
	// alive: its process runs (and, in this process, its engine runs):
	// its leases hold even past expiry, because its step may still run.
	alive
	// dead: its process is gone (or it is an engine of this process that
	// stopped): its leases are free at once.
	dead
)

// self is this process as a lease owner, without the engine part.
var self = sync.OnceValue(func() ownerID {
	host, _ := os.Hostname()
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	pidns, _ := os.Readlink("/proc/self/ns/pid")
	return ownerID{host: host, boot: strings.TrimSpace(string(boot)), pidns: pidns, pid: os.Getpid(), start: procStart(os.Getpid())}
})

// engines are the engines running in this process, by owner string.
var engines sync.Map

// procStart is field 22 of /proc/<pid>/stat, the process's start time
// since boot; "" if the process does not exist.
func procStart(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); the start time is field 22.
	if len(f) < 20 {
		return ""
	}
	if f[0] == "Z" || f[0] == "X" {
		return "" // exited, not yet reaped
	}
	return f[19]
}

func ownerLiveness(s string) liveness {
	o, ok := parseOwner(s)
	me := self()
	if !ok || me.boot == "" || me.start == "" || o.host != me.host || o.boot != me.boot || o.pidns != me.pidns {
		return unknown
	}
	if o.pid == me.pid && o.start == me.start {
		if _, running := engines.Load(s); running {
			return alive
		}
		return dead
	}
	if procStart(o.pid) == o.start {
		return alive
	}
	return dead
}

func newOwner() string {
	o := self()
	var b [6]byte
	rand.Read(b[:])
	o.engine = fmt.Sprintf("%x", b)
	return o.String()
}
