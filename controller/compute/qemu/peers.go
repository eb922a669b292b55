package qemu

// The fence's second opening: a replica's way to its replication source
// (docs/replication.md). Every VM started with a relay program gets, for
// each of its datastore ports, one more guest forward, PeerAddr:<port>,
// whose relay (RunRelay's --peer mode, a process per connection, started
// by qemu like the agent endpoint's) reads the target at connect time
// from the instance's replication-source file. Without the file the
// relay connects nowhere and the guest's connection is closed: an
// instance that is not a replica reaches nothing new. ReplicationRoute
// writes the file (one atomic rename), so pointing a replica at another
// source — a promote, an eject — is one rename and a reconnect by the
// database's own replication thread; nothing in the path depends on the
// controller process, and a VM started again after a controller restart
// gets the same opening from the same launch configuration.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	bq "strata/builder/qemu"
	"strata/controller/compute"
)

// PeerAddr is the address a replica's guest reaches its replication source
// at, on the source's datastore port.
const PeerAddr = "10.0.2.101"

var _ compute.ReplicationRouter = (*Driver)(nil)

// peerFile is where an instance's replication source is recorded.
func (p paths) peerFile() string { return filepath.Join(p.dir, "replication-source") }

// peerCommand is the relay a guest's connection to PeerAddr:port is handed
// to; nil when the driver has no relay program, or when its words (the
// state directory's path among them) cannot be said on qemu's command
// line.
func (d *Driver) peerCommand(p paths, port int) []string {
	if len(d.cfg.RelayCommand) == 0 {
		return nil
	}
	cmd := append(slices.Clone(d.cfg.RelayCommand), "--peer", p.peerFile(), "--port", strconv.Itoa(port))
	for _, w := range cmd {
		if !bq.CommandWordOK(w) {
			return nil
		}
	}
	return cmd
}

// peerWays are a VM's openings to its replication source: one per
// datastore port.
func (d *Driver) peerWays(p paths, st serverState) []bq.GuestForward {
	var out []bq.GuestForward
	for _, e := range st.Endpoints {
		if cmd := d.peerCommand(p, e.GuestPort); cmd != nil {
			out = append(out, bq.GuestForward{GuestAddr: PeerAddr, GuestPort: e.GuestPort, Command: cmd})
		}
	}
	return out
}

// ReplicationRoute points the replica's opening at the source's datastore
// port on this host (the endpoint its clients use, sourceHost:sourcePort)
// and returns where the replica's guest connects: PeerAddr and the
// datastore's port. Called again, it rewrites the file: a replica's next
// connection reaches whatever source was set last.
func (d *Driver) ReplicationRoute(ctx context.Context, replica, source compute.Server, sourceHost string, sourcePort int) (string, int, error) {
	if err := checkID(replica.ID); err != nil {
		return "", 0, err
	}
	if err := checkID(source.ID); err != nil {
		return "", 0, err
	}
	sst, err := d.loadState(d.paths(source.ID))
	if err != nil {
		return "", 0, fmt.Errorf("replication source %s: %w", source.ID, err)
	}
	var target compute.Endpoint
	found := false
	for _, e := range sst.Endpoints {
		if e.Host == sourceHost && e.Port == sourcePort {
			target, found = e, true
			break
		}
	}
	if !found {
		for _, e := range sst.Endpoints {
			if e.GuestPort == sourcePort {
				target, found = e, true
				break
			}
		}
	}
	if !found {
		return "", 0, fmt.Errorf("replication source %s has no forwarded port for %s", source.ID, net.JoinHostPort(sourceHost, strconv.Itoa(sourcePort)))
	}
	p := d.paths(replica.ID)
	rst, err := d.loadState(p)
	if err != nil {
		return "", 0, fmt.Errorf("replica %s: %w", replica.ID, err)
	}
	if _, ok := server(replica.ID, rst).Endpoint(target.GuestPort); !ok || d.peerCommand(p, target.GuestPort) == nil {
		return "", 0, fmt.Errorf("replica %s has no opening to port %d of a source: the driver runs without its relay program, or its state directory's path has characters qemu's command line cannot carry", replica.ID, target.GuestPort)
	}
	if reason, err := d.LaunchOutdated(ctx, compute.Server{ID: replica.ID}); err != nil {
		return "", 0, err
	} else if reason != "" {
		return "", 0, fmt.Errorf("replica %s: its VM may lack the opening to its source (%s)", replica.ID, reason)
	}
	line := fmt.Sprintf("%d %s\n", target.GuestPort, net.JoinHostPort(target.Host, strconv.Itoa(target.Port)))
	if err := writeFileAtomic(p.peerFile(), []byte(line)); err != nil {
		return "", 0, err
	}
	d.log.Info("replication route set", "replica", replica.ID, "source", source.ID, "port", target.GuestPort, "target", strings.TrimSpace(line))
	return PeerAddr, target.GuestPort, nil
}

// peerTarget reads the target for a guest port from a replication-source
// file.
func peerTarget(file string, port int) (netip.AddrPort, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return netip.AddrPort{}, fmt.Errorf("no replication source is set for this instance (%s)", file)
	} else if err != nil {
		return netip.AddrPort{}, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || f[0] != strconv.Itoa(port) {
			continue
		}
		ap, err := netip.ParseAddrPort(f[1])
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("%s: target %q: %w", file, f[1], err)
		}
		return ap, nil
	}
	return netip.AddrPort{}, fmt.Errorf("%s names no source for port %d", file, port)
}

// peerLog is where a replica's relays write their own messages, in its
// instance directory.
const peerLog = "peer-relay.log"

// stderrTo points this process's standard error (file descriptor 2, and
// os.Stderr with it) at the file, appended to.
func stderrTo(file string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Dup3(int(f.Fd()), 2, 0)
}

// runPeer is the relay of one guest connection (stdin and stdout, as qemu
// hands it) to the replication source the file names now.
func runPeer(file string, port int, stdin io.Reader, stdout io.Writer) error {
	target, err := peerTarget(file, port)
	if err != nil {
		return fmt.Errorf("peer relay: %w", err)
	}
	c, err := net.DialTimeout("tcp", target.String(), 10*time.Second)
	if err != nil {
		return fmt.Errorf("peer relay: %w", err)
	}
	defer c.Close()
	go func() {
		io.Copy(c, stdin)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	if _, err := io.Copy(stdout, c); err != nil {
		return fmt.Errorf("peer relay: %s: %w", target, err)
	}
	return nil
}
