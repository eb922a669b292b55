// Command strata-agent is the strata guest agent: baked read-only into a
// database guest image, started by systemd, it reads the instance's
// bootstrap, dials the controller over SSH and carries out its operations.
//
// main parses flags, finds the bootstrap and hands over to package daemon;
// nothing else happens here.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"strata/agent/bootstrap"
	"strata/agent/chaos"
	"strata/agent/daemon"
	"strata/agent/logging"
	"strata/agent/netconfig"
	"strata/agent/wire"
)

// Stamped by the Makefile (-ldflags -X).
var (
	version = "dev"
	commit  = "unknown"
)

// exitConfig (EX_CONFIG) means the bootstrap is missing or wrong.
const exitConfig = 78

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("strata-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bootFile := fs.String("bootstrap", "", "read the bootstrap from this `file` instead of the config drive")
	drive := fs.String("config-drive", bootstrap.DefaultConfigDrive, "`directory` holding the config drive's files")
	stateDir := fs.String("state-dir", defaultStateDir(), "`directory` for the agent's key, journal and state")
	showVersion := fs.Bool("version", false, "print the version and exit")
	check := fs.Bool("check", false, "validate the bootstrap and exit")
	debug := fs.Bool("debug", false, "log at debug level")
	netDir := fs.String("network-config", "", "write systemd-networkd units for the config drive's "+netconfig.DataPath+" into `directory` and exit (strata-network.service)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "strata-agent: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	if *showVersion {
		fmt.Fprintf(stdout, "strata-agent %s (commit %s, %s)\n", version, commit, runtime.Version())
		return 0
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := logging.New(level)
	if *netDir != "" {
		return networkConfig(*drive, *netDir, stdout, stderr)
	}

	boot, where, err := bootstrap.Load(bootstrap.Source{File: *bootFile, ConfigDrive: *drive})
	if err != nil {
		log.Error("refusing to start: " + err.Error())
		return configError(*check)
	}
	if _, err := daemon.NewManager(boot, *stateDir, log); err != nil {
		log.Error("refusing to start: "+err.Error(), "bootstrap", where)
		return configError(*check)
	}
	if *check {
		fmt.Fprintf(stdout, "bootstrap %s is valid: instance %s, %s %s, controllers %s\n", where, boot.InstanceID,
			boot.Datastore.Manager, boot.Datastore.Version, strings.Join(boot.Controllers, ", "))
		return 0
	}
	log.Info("bootstrap read", "from", where, "commit", commit)
	if err := chaos.Load(filepath.Join(*drive, wire.ChaosFile), *stateDir, log); err != nil {
		log.Error("refusing to start: " + err.Error())
		return configError(false)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err = daemon.Run(ctx, daemon.Config{
		Bootstrap: boot,
		StateDir:  *stateDir,
		Version:   version,
		Logger:    log,
		AgentLog:  logging.JournalLog{Unit: "strata-agent.service"},
	})
	if err != nil {
		log.Error("strata-agent failed", "err", err)
		return 1
	}
	return 0
}

// networkConfig writes the network units and says what it did; a bad
// network_data.json writes nothing and fails (the image's DHCP stays).
func networkConfig(drive, dir string, stdout, stderr io.Writer) int {
	res, err := netconfig.Write(drive, dir)
	if err != nil {
		fmt.Fprintf(stderr, "strata-agent: network configuration: %v; no unit written, interfaces keep DHCP\n", err)
		return 1
	}
	if !res.Found {
		fmt.Fprintf(stdout, "no %s on the config drive (%s): interfaces keep DHCP\n", netconfig.DataPath, drive)
		return 0
	}
	for i, ifc := range res.Interfaces {
		var addrs []string
		for _, a := range ifc.Addresses {
			addrs = append(addrs, a.String())
		}
		how := strings.Join(addrs, " ")
		if ifc.DHCPv4 || ifc.DHCPv6 {
			how = strings.TrimSpace(how + " DHCP")
		}
		if how == "" {
			how = "router advertisements"
		}
		fmt.Fprintf(stdout, "%s: link %s (%s): %s\n", res.Written[i], ifc.Link, ifc.MAC, how)
	}
	for _, s := range res.Skipped {
		fmt.Fprintf(stdout, "left to DHCP: %s: %s\n", s.What, s.Why)
	}
	return 0
}

// configError returns exitConfig; under systemd (which restarts the agent
// 2 s after any exit) it first waits, so a config drive that is missing or
// wrong is looked at again every 15 s rather than every 2.
func configError(check bool) int {
	if !check && os.Getenv("INVOCATION_ID") != "" {
		time.Sleep(configRetryWait)
	}
	return exitConfig
}

const configRetryWait = 13 * time.Second

// defaultStateDir follows systemd's StateDirectory= (STATE_DIRECTORY).
func defaultStateDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		return strings.Split(d, ":")[0]
	}
	return "/var/lib/strata-agent"
}
