package nova

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

	"strata/controller/compute"
)

// findServer returns the instance's server, if there is one.
func (d *Driver) findServer(ctx context.Context, instanceID string) (*servers.Server, error) {
	pages, err := servers.List(d.compute, servers.ListOpts{Name: "^" + name(instanceID) + "$"}).AllPages(ctx)
	if err != nil {
		return nil, serviceErr("nova", "listing servers", err)
	}
	all, err := servers.ExtractServers(pages)
	if err != nil {
		return nil, serviceErr("nova", "listing servers", err)
	}
	for i := range all {
		if all[i].Name == name(instanceID) && all[i].Status != "DELETED" {
			return &all[i], nil
		}
	}
	return nil, nil
}

// securityGroup finds or makes the instance's group, opening only ports
// (TCP, IPv4 and IPv6). Neutron's default egress rules stay.
func (d *Driver) securityGroup(ctx context.Context, instanceID string, ports []int) (string, bool, error) {
	pages, err := groups.List(d.network, groups.ListOpts{Name: name(instanceID)}).AllPages(ctx)
	if err != nil {
		return "", false, serviceErr("neutron", "listing security groups", err)
	}
	existing, err := groups.ExtractGroups(pages)
	if err != nil {
		return "", false, serviceErr("neutron", "listing security groups", err)
	}
	var sg *groups.SecGroup
	created := false
	for i := range existing {
		if existing[i].Name == name(instanceID) {
			sg = &existing[i]
		}
	}
	if sg == nil {
		sg, err = groups.Create(ctx, d.network, groups.CreateOpts{Name: name(instanceID),
			Description: "strata instance " + instanceID + ": the datastore's ports only"}).Extract()
		if err != nil {
			return "", false, serviceErr("neutron", "creating security group "+name(instanceID), err)
		}
		created = true
	}
	have := map[string]bool{}
	for _, r := range sg.Rules {
		if r.Direction == "ingress" && r.Protocol == "tcp" {
			have[fmt.Sprintf("%s/%d", r.EtherType, r.PortRangeMin)] = true
		}
	}
	for _, p := range ports {
		for _, et := range []rules.RuleEtherType{rules.EtherType4, rules.EtherType6} {
			if have[fmt.Sprintf("%s/%d", et, p)] {
				continue
			}
			_, err := rules.Create(ctx, d.network, rules.CreateOpts{SecGroupID: sg.ID, Direction: rules.DirIngress, EtherType: et,
				Protocol: rules.ProtocolTCP, PortRangeMin: p, PortRangeMax: p}).Extract()
			if err != nil {
				return sg.ID, created, serviceErr("neutron", fmt.Sprintf("opening port %d in security group %s", p, sg.ID), err)
			}
		}
	}
	return sg.ID, created, nil
}

// flavor picks the smallest Nova flavor with at least the RAM and vCPUs
// whose root disk holds the image (needBytes: 0 unknown; a flavor disk of
// 0 is sized to the image). When none holds it, the smallest by RAM and
// vCPUs: Nova's refusal then says why.
func (d *Driver) flavor(ctx context.Context, ramMB, vcpus int, needBytes int64) (flavors.Flavor, error) {
	pages, err := flavors.ListDetail(d.compute, flavors.ListOpts{}).AllPages(ctx)
	if err != nil {
		return flavors.Flavor{}, serviceErr("nova", "listing flavors", err)
	}
	all, err := flavors.ExtractFlavors(pages)
	if err != nil {
		return flavors.Flavor{}, serviceErr("nova", "listing flavors", err)
	}
	var fit []flavors.Flavor
	for _, f := range all {
		if f.RAM >= ramMB && f.VCPUs >= vcpus {
			fit = append(fit, f)
		}
	}
	if len(fit) == 0 {
		return flavors.Flavor{}, fmt.Errorf("%w: nova has no flavor with %d MB RAM and %d vCPUs or more", compute.ErrInvalid, ramMB, vcpus)
	}
	holds := func(f flavors.Flavor) bool { return f.Disk == 0 || int64(f.Disk)<<30 >= needBytes }
	sort.Slice(fit, func(i, j int) bool {
		a, b := fit[i], fit[j]
		if ha, hb := holds(a), holds(b); ha != hb {
			return ha
		}
		if a.RAM != b.RAM {
			return a.RAM < b.RAM
		}
		if a.VCPUs != b.VCPUs {
			return a.VCPUs < b.VCPUs
		}
		return a.Disk < b.Disk
	})
	return fit[0], nil
}

// imageNeeds is the root disk the image needs in bytes: the largest of
// Glance's min_disk, virtual size and size. 0 when there is no Glance
// client or Glance cannot say (a deleted image: Nova's refusal names it).
func (d *Driver) imageNeeds(ctx context.Context, imageID string) int64 {
	if d.image == nil {
		return 0
	}
	img, err := images.Get(ctx, d.image, imageID).Extract()
	if err != nil {
		d.log.Warn("glance: reading the image to pick a flavor", "image", imageID, "err", err)
		return 0
	}
	return max(int64(img.MinDiskGigabytes)<<30, img.VirtualSize, img.SizeBytes)
}

// personality turns config drive files into Nova's injected files:
// "strata/bootstrap.json" → /etc/strata/bootstrap.json.
func personality(files map[string][]byte) servers.Personality {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var out servers.Personality
	for _, n := range names {
		out = append(out, &servers.File{Path: path.Join("/etc", strings.TrimPrefix(n, "/")), Contents: files[n]})
	}
	return out
}

// CreateServer boots the instance's server (or returns the existing one,
// started if it was stopped) and waits until it is ACTIVE. If the server
// fails, it and a security group made by this call are deleted again.
func (d *Driver) CreateServer(ctx context.Context, spec compute.ServerSpec) (compute.Server, error) {
	if err := checkID(spec.InstanceID); err != nil {
		return compute.Server{}, err
	}
	if spec.Image.Location == "" || spec.Volume.ID == "" {
		return compute.Server{}, fmt.Errorf("%w: a server needs a Glance image id and a volume", compute.ErrInvalid)
	}
	if srv, err := d.findServer(ctx, spec.InstanceID); err != nil {
		return compute.Server{}, err
	} else if srv != nil {
		if srv.Status == "SHUTOFF" {
			if err := d.start(ctx, srv.ID); err != nil {
				return compute.Server{}, err
			}
		}
		sgID, _, err := d.securityGroup(ctx, spec.InstanceID, spec.Ports)
		if err != nil {
			return compute.Server{}, err
		}
		groupID := ""
		if spec.ServerGroup != nil {
			if groupID, err = d.serverGroup(ctx, *spec.ServerGroup); err != nil {
				return compute.Server{}, err
			}
		}
		out, err := d.awaitActive(ctx, srv.ID, spec.Ports, sgID)
		return withGroup(out, groupID), err
	}
	flavor, err := d.flavor(ctx, spec.RAMMB, spec.VCPUs, d.imageNeeds(ctx, spec.Image.Location))
	if err != nil {
		return compute.Server{}, err
	}
	sgID, sgCreated, err := d.securityGroup(ctx, spec.InstanceID, spec.Ports)
	if err != nil {
		if sgCreated {
			return compute.Server{}, fmt.Errorf("%w %s", err, d.rollback(ctx, spec.InstanceID, "", sgID, ""))
		}
		return compute.Server{}, err
	}
	var hints servers.SchedulerHintOptsBuilder
	groupID := ""
	if spec.ServerGroup != nil {
		if groupID, err = d.serverGroup(ctx, *spec.ServerGroup); err != nil {
			return compute.Server{}, fmt.Errorf("%w %s", err, d.rollback(ctx, spec.InstanceID, "", sgID, ""))
		}
		hints = servers.SchedulerHintOpts{Group: groupID}
	}
	configDrive := true
	opts := servers.CreateOpts{
		Name: name(spec.InstanceID), ImageRef: spec.Image.Location, FlavorRef: flavor.ID,
		Networks: d.serverNetworks(spec.NICs), SecurityGroups: []string{sgID},
		AvailabilityZone: zoneOr(spec.AvailabilityZone, d.cfg.AvailabilityZone), ConfigDrive: &configDrive, Personality: personality(spec.ConfigDrive),
		Metadata: map[string]string{"strata_instance": spec.InstanceID},
		BlockDevice: []servers.BlockDevice{
			{SourceType: servers.SourceImage, DestinationType: servers.DestinationLocal, UUID: spec.Image.Location, BootIndex: 0, DeleteOnTermination: true},
			{SourceType: servers.SourceVolume, DestinationType: servers.DestinationVolume, UUID: spec.Volume.ID, BootIndex: -1, DeleteOnTermination: false},
		},
	}
	created, err := servers.Create(ctx, d.compute, opts, hints).Extract()
	if err != nil {
		refused := gophercloud.ResponseCodeIs(err, 400)
		// Nova's answer may not name what it refused ("Can not find
		// requested image"): the action names the image and flavor.
		err = serviceErr("nova", fmt.Sprintf("creating server %s from image %s with flavor %s (%s)", opts.Name, spec.Image.Location, flavor.Name, flavor.ID), err)
		if refused {
			// Nova checked the request and refused it (a deleted image,
			// one too big for the flavor, ...): the same request gets the
			// same answer.
			err = fmt.Errorf("%w: %w", compute.ErrInvalid, err)
		}
		return compute.Server{}, fmt.Errorf("%w %s", err, d.rollback(ctx, spec.InstanceID, "", sgID, groupID))
	}
	d.log.Info("server created", "instance", spec.InstanceID, "server", created.ID, "flavor", flavor.Name, "image", spec.Image.Location, "server_group", groupID)
	srv, err := d.awaitActive(ctx, created.ID, spec.Ports, sgID)
	if err != nil {
		done := d.rollback(ctx, spec.InstanceID, created.ID, sgID, groupID)
		return compute.Server{}, fmt.Errorf("%w %s; the volume stays for the instance)", err, strings.TrimSuffix(done, ")"))
	}
	return withGroup(srv, groupID), nil
}

// withGroup records the server group in the server's Refs.
func withGroup(srv compute.Server, groupID string) compute.Server {
	if groupID != "" && srv.ID != "" {
		if srv.Refs == nil {
			srv.Refs = map[string]string{}
		}
		srv.Refs[refServerGroup] = groupID
	}
	return srv
}

// serverNetworks are Nova's networks entries for the resolved NICs: a
// port alone, or a network with an optional fixed address; none is the
// configured network.
func (d *Driver) serverNetworks(nics []compute.NIC) []servers.Network {
	if len(nics) == 0 {
		return []servers.Network{{UUID: d.cfg.Network}}
	}
	out := make([]servers.Network, 0, len(nics))
	for _, n := range nics {
		if n.PortID != "" {
			out = append(out, servers.Network{Port: n.PortID})
			continue
		}
		out = append(out, servers.Network{UUID: n.NetworkID, FixedIP: n.FixedIP})
	}
	return out
}

// rollback removes what a failed CreateServer made and says what it did,
// for the error: "(the server and its security group were deleted)", or
// what it could not delete. A server group goes only if no server is left
// in it (a replica's failure leaves its source's group).
func (d *Driver) rollback(ctx context.Context, instanceID, serverID, sgID, groupID string) string {
	cctx, cancel := cleanupCtx(ctx)
	defer cancel()
	var gone, left []string
	deleted := ""
	if serverID != "" {
		if err := d.deleteServer(cctx, serverID); err != nil {
			d.log.Error("rollback: server not deleted", "instance", instanceID, "server", serverID, "err", err)
			left = append(left, fmt.Sprintf("server %s is left: %v", serverID, err))
		} else {
			gone = append(gone, "the server")
			deleted = serverID
		}
	}
	if sgID != "" {
		err := d.deleteGroup(cctx, sgID)
		if err != nil {
			d.log.Error("rollback: security group not deleted", "instance", instanceID, "security_group", sgID, "err", err)
			left = append(left, fmt.Sprintf("security group %s is left: %v", sgID, err))
		} else {
			gone = append(gone, "its security group")
		}
	}
	if groupID != "" {
		if dropped, err := d.dropEmptyGroup(cctx, groupID, deleted); err != nil {
			d.log.Error("rollback: server group not deleted", "instance", instanceID, "server_group", groupID, "err", err)
			left = append(left, fmt.Sprintf("server group %s is left: %v", groupID, err))
		} else if dropped {
			gone = append(gone, "its server group")
		}
	}
	var out []string
	switch len(gone) {
	case 0:
	case 1:
		out = append(out, gone[0]+" was deleted")
	default:
		out = append(out, strings.Join(gone[:len(gone)-1], ", ")+" and "+gone[len(gone)-1]+" were deleted")
	}
	out = append(out, left...)
	return "(" + strings.Join(out, "; ") + ")"
}

// deleteGroup deletes a security group; Neutron refuses (409) while a
// port still uses it, which lasts until Nova has let go of the server's
// port: ask again until the timeout.
func (d *Driver) deleteGroup(ctx context.Context, id string) error {
	return d.wait(ctx, "deleting neutron security group "+id, func() (bool, error) {
		err := groups.Delete(ctx, d.network, id).ExtractErr()
		switch {
		case err == nil, gophercloud.ResponseCodeIs(err, 404):
			return true, nil
		case retryable(err):
			return false, nil
		}
		return false, serviceErr("neutron", "deleting security group "+id, err)
	})
}

// awaitActive waits for ACTIVE; ERROR ends the wait with Nova's fault.
func (d *Driver) awaitActive(ctx context.Context, id string, ports []int, sgID string) (compute.Server, error) {
	var srv *servers.Server
	err := d.wait(ctx, "nova server "+id, func() (bool, error) {
		cur, err := servers.Get(ctx, d.compute, id).Extract()
		if err != nil {
			return false, serviceErr("nova", "reading server "+id, err)
		}
		srv = cur
		switch cur.Status {
		case "ACTIVE":
			return true, nil
		case "ERROR":
			fault := d.faultOf(ctx, cur)
			err := fmt.Errorf("nova: server %s went to ERROR: %s", id, faultText(fault))
			if buildAborted(fault) {
				err = fmt.Errorf("%w: %w", compute.ErrInvalid, err)
			}
			return false, err
		}
		return false, nil
	})
	if err != nil {
		return compute.Server{}, err
	}
	out := toServer(*srv, ports)
	out.Refs = map[string]string{refSecurityGroup: sgID}
	return out, nil
}

// buildAborted tells a build Nova gave up without rescheduling (its
// BuildAbortException: the flavor's disk too small for the image, an image
// it cannot use, ...) from one that may succeed when tried again (no valid
// host, a compute node's hiccup).
func buildAborted(f servers.Fault) bool {
	return strings.HasPrefix(f.Message, "Build of instance ") && strings.Contains(f.Message, " aborted: ")
}

// faultWait is how long a server in ERROR without a fault is read again.
var faultWait = 10 * time.Second

// faultOf is the fault of a server Nova put in ERROR. Nova's conductor
// sets ERROR, then records the fault: a read in between (seen on the test
// cloud for "No valid host was found") has none, so the server is read
// again for up to faultWait and the instance's fault says why.
func (d *Driver) faultOf(ctx context.Context, s *servers.Server) servers.Fault {
	deadline := time.Now().Add(faultWait)
	for s.Fault.Message == "" && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return s.Fault
		case <-time.After(d.cfg.Poll):
		}
		cur, err := servers.Get(ctx, d.compute, s.ID).Extract()
		if err != nil {
			break
		}
		s = cur
	}
	return s.Fault
}

// faultText is Nova's fault message, trimmed (Nova 26's No valid host
// message ends in a space), and its code.
func faultText(f servers.Fault) string {
	msg := strings.TrimSpace(f.Message)
	if msg == "" {
		return "(no fault recorded)"
	}
	return fmt.Sprintf("%s (code %d)", msg, f.Code)
}

// toServer lists the addresses: fixed ones are private, floating public.
// Clients reach each port at the first fixed address.
func toServer(s servers.Server, ports []int) compute.Server {
	out := compute.Server{ID: s.ID}
	nets := make([]string, 0, len(s.Addresses))
	for n := range s.Addresses {
		nets = append(nets, n)
	}
	sort.Strings(nets)
	for _, n := range nets {
		list, _ := s.Addresses[n].([]any)
		for _, a := range list {
			m, _ := a.(map[string]any)
			addr, _ := m["addr"].(string)
			kind, _ := m["OS-EXT-IPS:type"].(string)
			if addr == "" {
				continue
			}
			t := "private"
			if kind == "floating" {
				t = "public"
			}
			out.Addresses = append(out.Addresses, compute.Address{Type: t, Address: addr})
		}
	}
	host := ""
	for _, a := range out.Addresses {
		if a.Type == "private" {
			host = a.Address
			break
		}
	}
	for _, p := range ports {
		out.Endpoints = append(out.Endpoints, compute.Endpoint{GuestPort: p, Host: host, Port: p})
	}
	return out
}

// ServerState maps Nova's status.
func (d *Driver) ServerState(ctx context.Context, srv compute.Server) (compute.State, error) {
	cur, err := servers.Get(ctx, d.compute, srv.ID).Extract()
	if gophercloud.ResponseCodeIs(err, 404) {
		return compute.StateGone, nil
	}
	if err != nil {
		return "", serviceErr("nova", "reading server "+srv.ID, err)
	}
	switch cur.Status {
	case "SHUTOFF", "STOPPED", "SUSPENDED", "PAUSED", "SHELVED", "SHELVED_OFFLOADED":
		return compute.StateStopped, nil
	case "DELETED", "SOFT_DELETED":
		return compute.StateGone, nil
	case "ERROR":
		return "", fmt.Errorf("nova: server %s is in ERROR: %s", srv.ID, faultText(cur.Fault))
	}
	return compute.StateRunning, nil
}

// StartServer starts a SHUTOFF server; others are left alone.
func (d *Driver) StartServer(ctx context.Context, srv compute.Server) error {
	cur, err := servers.Get(ctx, d.compute, srv.ID).Extract()
	if err != nil {
		return serviceErr("nova", "reading server "+srv.ID, err)
	}
	if cur.Status != "SHUTOFF" {
		return nil
	}
	return d.start(ctx, srv.ID)
}

// RestartServer hard-reboots the server: Nova stops and starts it,
// whatever the guest does (the management API's reboot).
func (d *Driver) RestartServer(ctx context.Context, srv compute.Server) error {
	err := servers.Reboot(ctx, d.compute, srv.ID, servers.RebootOpts{Type: servers.HardReboot}).ExtractErr()
	if err != nil {
		return serviceErr("nova", "rebooting server "+srv.ID, err)
	}
	return nil
}

func (d *Driver) start(ctx context.Context, id string) error {
	err := servers.Start(ctx, d.compute, id).ExtractErr()
	if err != nil && !gophercloud.ResponseCodeIs(err, 409) { // 409: already starting
		return serviceErr("nova", "starting server "+id, err)
	}
	return nil
}

// refSecurityGroup is the Refs key of the instance's security group.
const refSecurityGroup = "security_group"

// DeleteServer deletes the server (and a rebuild's snapshot of its old
// root disk), waits until Nova has, then deletes the instance's security
// group (Neutron refuses while a port uses it). A
// missing server or group is not an error.
func (d *Driver) DeleteServer(ctx context.Context, srv compute.Server) error {
	if srv.ID != "" {
		// A rebuild's snapshot of the old root disk (a rebuild that
		// ended in ERROR leaves it) goes with the server.
		if d.image != nil {
			cur, err := servers.Get(ctx, d.compute, srv.ID).Extract()
			if err != nil && !gophercloud.ResponseCodeIs(err, 404) {
				return serviceErr("nova", "reading server "+srv.ID, err)
			}
			if err == nil {
				if id, err := instanceOfServer(cur); err == nil {
					if err := d.dropRollbackImage(ctx, id); err != nil {
						return err
					}
				}
			}
		}
		if err := d.deleteServer(ctx, srv.ID); err != nil {
			return err
		}
	}
	if sg := srv.Refs[refSecurityGroup]; sg != "" {
		if err := d.deleteGroup(ctx, sg); err != nil {
			return err
		}
	}
	if g := srv.Refs[refServerGroup]; g != "" {
		if _, err := d.dropEmptyGroup(ctx, g, srv.ID); err != nil {
			return err
		}
	}
	return nil
}

func (d *Driver) deleteServer(ctx context.Context, id string) error {
	accepted := false
	var last error
	return d.wait(ctx, "deleting nova server "+id, func() (bool, error) {
		if !accepted {
			err := servers.Delete(ctx, d.compute, id).ExtractErr()
			switch {
			case err == nil:
				accepted = true
			case gophercloud.ResponseCodeIs(err, 404):
				return true, nil
			case retryable(err):
				// Nova answers 500 when its database is busy ("database
				// is locked", a deadlock) and 409 while a task on the
				// server runs: ask again on the next poll.
				err = serviceErr("nova", "deleting server "+id, err)
				if last == nil || last.Error() != err.Error() {
					d.log.Warn("nova: delete not accepted yet, asking again", "server", id, "err", err)
				}
				last = err
				return false, nil
			default:
				return false, serviceErr("nova", "deleting server "+id, err)
			}
		}
		cur, err := servers.Get(ctx, d.compute, id).Extract()
		if gophercloud.ResponseCodeIs(err, 404) {
			return true, nil
		}
		if err != nil {
			return false, serviceErr("nova", "reading server "+id, err)
		}
		if cur.Status == "ERROR" && cur.TaskState == "" {
			// Nova took the delete (task_state "deleting") and failed
			// it: the server is back in ERROR with the failure as its
			// fault. Deleting again is how Nova wants it retried.
			d.log.Warn("nova: the delete failed, asking again", "server", id, "fault", faultText(cur.Fault))
			accepted = false
		}
		return cur.Status == "DELETED", nil
	})
}

// retryable tells an answer worth asking again: a conflict with a task
// in progress, or a server-side failure.
func retryable(err error) bool {
	var code gophercloud.ErrUnexpectedResponseCode
	return errors.As(err, &code) && (code.Actual == 409 || code.Actual >= 500)
}

// Console returns the end of the server's console log.
func (d *Driver) Console(ctx context.Context, srv compute.Server, maxBytes int) (string, error) {
	out, err := servers.ShowConsoleOutput(ctx, d.compute, srv.ID, servers.ShowConsoleOutputOpts{Length: 200}).Extract()
	if err != nil {
		return "", serviceErr("nova", "reading the console of server "+srv.ID, err)
	}
	if maxBytes > 0 && len(out) > maxBytes {
		out = out[len(out)-maxBytes:]
	}
	return out, nil
}
