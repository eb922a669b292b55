package qemu

import (
	"os"

	"strata/controller/compute"
)

// Claim exposes the address allocation to the tests.
func (d *Driver) Claim(id, networkID, want string, ports []int) (string, error) {
	n, ok := d.network(networkID)
	if !ok {
		return "", compute.ErrInvalid
	}
	a, err := d.claim(id, n, want, ports)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}

// Release exposes DeleteServer's release of an instance's addresses.
func (d *Driver) Release(id string) error { return d.release(id) }

// WriteServer records a server.json for id without a VM: the publisher's
// tests relay to a plain listener standing in for the guest's forward.
func (d *Driver) WriteServer(id, address string, endpoints []compute.Endpoint) error {
	p := d.paths(id)
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	return d.saveState(p, serverState{Format: stateFormat, Network: d.cfg.Networks[0].ID, Address: address, Endpoints: endpoints})
}

// KeepPublished is what StartServer and ServerState do for a running VM's
// publication.
func (d *Driver) KeepPublished(id string) error {
	p := d.paths(id)
	st, err := d.loadState(p)
	if err != nil {
		return err
	}
	return d.keepPublished(id, p, st)
}

// RelayPID is the instance's running publish relay.
func (d *Driver) RelayPID(id string) (int, bool) { return d.relayPID(d.paths(id)) }
