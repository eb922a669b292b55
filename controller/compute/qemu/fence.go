package qemu

// The fence. Without it, qemu's user network lets a guest reach the host:
// its 10.0.2.2 is the host's 127.0.0.1 (the API, the agent endpoint, other
// instances' forwarded ports, whatever else listens there). A guest may
// run code its tenant chose (PostgreSQL's COPY ... TO PROGRAM with root
// enabled), so every VM is started with restrict=on and one way out: TCP
// to GuestEndpointAddr:<endpoint port>, which qemu hands, connection by
// connection, to a fresh relay process connecting to the agent endpoint on
// this host. A relay per connection, started by qemu, not by the
// controller: the way out works while no controller runs and leads to the
// restarted one (VMs outlive the controller), and the agent's reconnects
// need nothing from the controller but its listening socket.
//
// Backups, restores and log publishing travel over the agent's SSH
// session, so they need no other opening. Replication does: a replica's
// way to its source is the second opening (peers.go), given to every VM
// in wayOut, leading nowhere until the instance's replication-source file
// names a source.

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"

	bq "strata/builder/qemu"
)

// GuestEndpointAddr is the address guests reach the agent endpoint at: one
// of qemu's user network that is neither its gateway (10.0.2.2, the host)
// nor its DNS (10.0.2.3).
const GuestEndpointAddr = "10.0.2.100"

// checkFence validates the endpoint and finds the relay program.
func checkFence(cfg *Config) error {
	if cfg.AgentEndpoint == "" {
		return nil
	}
	ap, err := netip.ParseAddrPort(cfg.AgentEndpoint)
	if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
		return fmt.Errorf("qemu driver: agent endpoint %q: want an IPv4 host:port the relay can connect to", cfg.AgentEndpoint)
	}
	if ap.Addr().IsUnspecified() {
		// Listening on every address: the relay uses loopback.
		cfg.AgentEndpoint = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port()).String()
	}
	relay := cfg.Relay
	if relay == "" {
		relay = "socat"
	}
	path, err := exec.LookPath(relay)
	if err != nil {
		return fmt.Errorf("qemu driver: guests reach the agent endpoint through %s, which is not installed: install it with `ci/deps.sh boot` (Debian package socat): %w", relay, err)
	}
	cfg.Relay = path
	return nil
}

// GuestEndpoint is the agent endpoint's address as the driver's guests
// reach it (what bootstraps should name); empty without an endpoint.
func (d *Driver) GuestEndpoint() string {
	if d.cfg.AgentEndpoint == "" {
		return ""
	}
	_, port, _ := net.SplitHostPort(d.cfg.AgentEndpoint)
	return net.JoinHostPort(GuestEndpointAddr, port)
}

// wayOut is a VM's ways out: to the agent endpoint, and to a replication
// source where one is set (peers.go).
func (d *Driver) wayOut(p paths, st serverState) []bq.GuestForward {
	if d.cfg.AgentEndpoint == "" {
		return nil
	}
	ap := netip.MustParseAddrPort(d.cfg.AgentEndpoint)
	return append([]bq.GuestForward{{
		GuestAddr: GuestEndpointAddr, GuestPort: int(ap.Port()),
		Command: []string{d.cfg.Relay, "-", "TCP:" + ap.Addr().String() + ":" + strconv.Itoa(int(ap.Port()))},
	}}, d.peerWays(p, st)...)
}
