package qemu

import "strata/controller/compute"

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
