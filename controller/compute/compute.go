// Package compute is the one interface every compute driver implements —
// local qemu VMs (qemu/, the embedded default) today, Nova + Cinder via
// gophercloud beside it — and the values drivers take and return. The
// calls mirror the OpenStack ones a Trove taskmanager makes: create a
// volume, boot a server from an image with that volume and a config drive
// on the networks asked for, look at it, start it again, extend the
// volume, delete both, read the console.
//
// A driver owns machines, disks and networks and nothing else: it must not
// talk to the agent, know about datastores, or decide instance status.
// Every call is idempotent per instance, because the task engine repeats a
// step that was interrupted.
package compute

import (
	"context"
	"errors"
	"strings"
)

// Driver creates and removes the machines and volumes instances run on.
type Driver interface {
	// CreateVolume makes an instance's data volume. If the volume exists
	// already it is returned as it is.
	CreateVolume(ctx context.Context, spec VolumeSpec) (Volume, error)
	// CreateServer boots the instance's machine from spec.Image with
	// spec.Volume attached and a config drive holding spec.ConfigDrive,
	// exposing spec.Ports. If the server exists it is returned (and
	// started if it was stopped).
	CreateServer(ctx context.Context, spec ServerSpec) (Server, error)
	// ServerState says whether the machine runs.
	ServerState(ctx context.Context, srv Server) (State, error)
	// StartServer starts a stopped machine again (after a host or
	// controller restart); a running one is left alone.
	StartServer(ctx context.Context, srv Server) error
	// ExtendVolume grows an attached volume to sizeGB; the guest sees the
	// new size at once (its filesystem is grown by the agent).
	ExtendVolume(ctx context.Context, srv Server, vol Volume, sizeGB int) (Volume, error)
	// DeleteServer stops and removes the machine and its config drive;
	// a missing server is not an error.
	DeleteServer(ctx context.Context, srv Server) error
	// DeleteVolume removes the volume; a missing one is not an error.
	DeleteVolume(ctx context.Context, vol Volume) error
	// Console returns the end of the machine's console log (at most
	// maxBytes), for fault details.
	Console(ctx context.Context, srv Server, maxBytes int) (string, error)
	// Networks lists the networks servers can be attached to.
	Networks(ctx context.Context) ([]Network, error)
	// ResolveNICs checks a request's network interfaces (Trove's nics)
	// before anything is created and returns them completed: none names
	// the default network. What the driver cannot honour — an unknown
	// network, subnet or port, an address outside its network or taken —
	// is an error wrapping ErrInvalid that names the valid networks.
	ResolveNICs(ctx context.Context, nics []NIC) ([]NIC, error)
}

// NIC is one network interface a server is asked to have: Trove's nics
// entry (net-id or network_id, subnet_id, ip_address or v4-fixed-ip,
// port-id).
type NIC struct {
	NetworkID string `json:"network_id,omitempty"`
	SubnetID  string `json:"subnet_id,omitempty"`
	PortID    string `json:"port_id,omitempty"`
	// FixedIP is the IPv4 address asked for.
	FixedIP string `json:"fixed_ip,omitempty"`
}

// Network is one a server can be attached to.
type Network struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// CIDRs are its subnets' ranges, when the driver knows them.
	CIDRs []string `json:"cidrs,omitempty"`
	// Default: the network a request naming none gets.
	Default bool `json:"default,omitempty"`
}

// NetworkList says which networks there are, for error messages:
// "ID (name)" each, the default marked.
func NetworkList(nets []Network) string {
	if len(nets) == 0 {
		return "none"
	}
	var parts []string
	for _, n := range nets {
		s := n.ID
		if n.Name != "" {
			s += " (" + n.Name
			if len(n.CIDRs) > 0 {
				s += ", " + strings.Join(n.CIDRs, ", ")
			}
			if n.Default {
				s += ", the default"
			}
			s += ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// Capabilities only some drivers have, each its own small interface that
// callers check for with a type assertion.

// LaunchChecker is a driver whose machines outlive the controller and may
// run with settings older than the driver's (the local qemu driver).
type LaunchChecker interface {
	// LaunchOutdated says why srv's running machine needs a restart to
	// run with the driver's current launch settings; "" when it does not
	// (or does not run).
	LaunchOutdated(ctx context.Context, srv Server) (string, error)
}

// ReplicationRouter is a driver whose machines can reach another
// instance's database, for replication (docs/replication.md): it says
// where the replica's server finds its source. A driver without it
// cannot host replicas (the local qemu driver opens a way through its
// fence: controller/compute/qemu/peers.go).
type ReplicationRouter interface {
	// ReplicationRoute returns the address the replica's guest connects
	// to for its source, whose clients reach it at source (host:port);
	// it sets up whatever the route needs and may be called again.
	ReplicationRoute(ctx context.Context, replica, source Server, sourceHost string, sourcePort int) (host string, port int, err error)
}

// Fencer is a driver that can fence a machine: power it off at once
// (no grace: a fenced guest must not take another write) and keep it off
// — its ServerState is StateFenced and StartServer, CreateServer and a
// rebuild refuse it (ErrFenced) — until it is deleted or its fence is
// lifted. A replication source ejected from its group (failover) is
// fenced, so that it can never be a second writable primary, whatever its
// agent does; UnfenceServer lifts the fence (the machine stays off, and
// StartServer may start it again) when it rejoins the group as a replica.
type Fencer interface {
	FenceServer(ctx context.Context, srv Server) error
	UnfenceServer(ctx context.Context, srv Server) error
}

// Flavor is the size of a machine: what a flavor resize changes.
type Flavor struct {
	RAMMB int
	VCPUs int
	// RootDiskGB is the flavor's root disk (GiB); 0 keeps the disk.
	RootDiskGB int
}

// FlavorResizer is a driver that can give a machine another flavor (a
// flavor resize): the machine is stopped, resized and started again,
// with its disks. Called again with the same flavor while the machine
// runs with it, it does nothing; while it is stopped, it starts it.
type FlavorResizer interface {
	ResizeServer(ctx context.Context, srv Server, f Flavor) error
}

// Restarter restarts a machine with the driver's current settings.
type Restarter interface {
	// RestartServer stops the machine (gracefully, then forcibly) and
	// starts it again.
	RestartServer(ctx context.Context, srv Server) error
}

// VolumeSizer reports a volume's actual size, for recovery to reconcile
// the record with the disk after a crash.
type VolumeSizer interface {
	// VolumeSize is the volume's size in whole GB.
	VolumeSize(ctx context.Context, vol Volume) (int, error)
}

// Rebuilder replaces a server's root disk by a fresh one from another
// image, keeping its data volume, addresses and id, and can undo that until
// told to drop the old disk: the rebuild task's compute side.
type Rebuilder interface {
	// RebuildServer powers the machine off cleanly (the guest's services
	// stop and flush), sets its root disk and config drive aside — on the
	// first call only: a repeated call keeps what the first set aside and
	// remakes the new disk — makes a root disk from spec.Image and a config
	// drive from spec.ConfigDrive, and boots with spec.Volume attached.
	RebuildServer(ctx context.Context, srv Server, spec ServerSpec) (Server, error)
	// RevertServer stops the rebuilt machine, puts the disks (and the
	// data volume's copy, with KeepVolume) set aside back and boots them.
	// With nothing set aside (reverted already) it only makes sure the
	// machine runs. configDrive is the old guest's config drive, for a
	// driver that writes the drive anew with every rebuild (Nova); a
	// driver that set the old drive aside puts that back and ignores it.
	RevertServer(ctx context.Context, srv Server, configDrive map[string][]byte) error
	// DropOldServer removes what RebuildServer set aside; nothing there is
	// not an error.
	DropOldServer(ctx context.Context, srv Server) error
}

// VolumeKeeper is a Rebuilder that honours ServerSpec.KeepVolume: it keeps
// the data volume's content through a rebuild and puts it back on
// revert. A datastore version upgrade, whose new guest changes the data,
// needs it to roll back; a driver without it can rebuild but not upgrade.
type VolumeKeeper interface {
	Rebuilder
	// KeepsVolume says the driver honours KeepVolume (always true: the
	// method marks the capability).
	KeepsVolume() bool
}

// Publisher publishes a server's ports for clients beyond the addresses
// it has anyway (Trove's access.is_public), letting in only the client
// addresses access allows: on the local driver, an address of the
// operator's pool of public addresses with the standard ports relayed to
// the instance; a driver without this interface has no public addresses.
type Publisher interface {
	// CheckAccess says, before anything is made or changed, whether the
	// driver can honour a; what it cannot is an error wrapping ErrInvalid
	// that says why and what to configure.
	CheckAccess(ctx context.Context, a Access) error
	// Publish brings srv's publication to what a asks for: public, its
	// ports are published (an address of type "public" in the returned
	// server) and connections from outside a.AllowedCIDRs refused; not
	// public, any publication is removed. Idempotent, and each call leaves
	// either the old or the new publication in force.
	Publish(ctx context.Context, srv Server, ports []int, a Access) (Server, error)
}

// Access is Trove's access: whether an instance is published, and the
// client addresses (IPv4 CIDR blocks, checked) let in; none means every
// client.
type Access struct {
	Public       bool     `json:"is_public"`
	AllowedCIDRs []string `json:"allowed_cidrs,omitempty"`
}

// VolumeSpec describes a data volume.
type VolumeSpec struct {
	InstanceID string
	Name       string
	SizeGB     int
	// AvailabilityZone, if set, is where a ZonePlacer makes the volume.
	AvailabilityZone string
}

// ZonePlacer is a driver that places a server and its volume in the
// availability zone a create names (Trove's availability_zone: Nova's
// zones). A driver without it places every server itself, and a create
// that names a zone is refused.
type ZonePlacer interface {
	// CheckAvailabilityZone fails with ErrInvalid, naming the zones
	// there are, unless zone is an available one.
	CheckAvailabilityZone(ctx context.Context, zone string) error
}

// Trove's locality: the policies of a server group.
const (
	LocalityAffinity     = "affinity"
	LocalityAntiAffinity = "anti-affinity"
)

// ServerGroup is Trove's locality: the servers of one group run on one
// host (affinity) or each on another (anti-affinity).
type ServerGroup struct {
	// Key names the group: the id of the instance that founded it (a
	// replication source); its replicas join it with the same key.
	Key    string
	Policy string
}

// GroupPlacer is a driver that places servers by server group (Trove's
// locality: Nova's server groups). A driver without it refuses a create
// that asks for locality.
type GroupPlacer interface {
	// CheckLocality fails with ErrInvalid, saying why, unless the driver
	// can place servers by policy.
	CheckLocality(ctx context.Context, policy string) error
}

// Volume is a created data volume.
type Volume struct {
	// ID is the driver's id (a Cinder volume id; the instance id locally).
	ID     string `json:"id"`
	SizeGB int    `json:"size_gb"`
	// GuestDevice is the stable path the guest sees the volume at
	// (/dev/disk/by-id/virtio-<serial>), for the agent's bootstrap.
	GuestDevice string `json:"guest_device"`
}

// ImageRef is the image a server boots.
type ImageRef struct {
	ID string
	// Location is what the driver opens: a file (local image store) or a
	// Glance image id.
	Location string
	// Format is the disk format (qcow2, raw).
	Format string
}

// ServerSpec describes a machine.
type ServerSpec struct {
	InstanceID string
	Name       string
	Image      ImageRef
	RAMMB      int
	VCPUs      int
	// RootDiskGB is the flavor's root disk (GiB); 0 keeps the image's
	// size. A disk smaller than the image is refused, as Nova does.
	RootDiskGB int
	Volume     Volume
	// ConfigDrive files (path inside the drive → content): the agent's
	// bootstrap. The drive is labelled config-2.
	ConfigDrive map[string][]byte
	// Ports are guest TCP ports clients must reach (the database port).
	Ports []int
	// NICs are the network interfaces, as ResolveNICs returned them
	// (none: the default network).
	NICs []NIC
	// AvailabilityZone, if set, is where a ZonePlacer boots the server.
	AvailabilityZone string
	// ServerGroup, if set, is the group a GroupPlacer puts the server in.
	ServerGroup *ServerGroup
	// KeepVolume (RebuildServer only) also sets the data volume's content
	// aside, copied while the machine is off, for RevertServer to put back
	// and DropOldServer to remove: a rebuild whose new guest changes the
	// data (a datastore version upgrade) can then roll back to the data as
	// the old guest left it. A driver that cannot refuses it (ErrInvalid).
	KeepVolume bool
}

// Server is a created machine.
type Server struct {
	// ID is the driver's id (a Nova server id; the instance id locally).
	ID        string     `json:"id"`
	Addresses []Address  `json:"addresses"`
	Endpoints []Endpoint `json:"endpoints"`
	// Refs are the driver's own references to what belongs to the server
	// (Nova: its security group), stored with the instance so that
	// deleting finds them even after the server is gone.
	Refs map[string]string `json:"refs,omitempty"`
}

// Address is one of a server's IP addresses.
type Address struct {
	// Type is "private" or "public", as Trove lists them.
	Type    string `json:"type"`
	Address string `json:"address"`
	// Network is the id of the network the address is on.
	Network string `json:"network,omitempty"`
}

// Endpoint is where clients reach a guest port.
type Endpoint struct {
	GuestPort int    `json:"guest_port"`
	Host      string `json:"host"`
	Port      int    `json:"port"`
}

// Endpoint returns where guestPort is reachable.
func (s Server) Endpoint(guestPort int) (Endpoint, bool) {
	for _, e := range s.Endpoints {
		if e.GuestPort == guestPort {
			return e, true
		}
	}
	return Endpoint{}, false
}

// State is a machine's power state.
type State string

const (
	StateRunning State = "running"
	StateStopped State = "stopped"
	// StateGone: the driver has no such server.
	StateGone State = "gone"
	// StateFenced: the machine was fenced (Fencer): off, and kept off.
	StateFenced State = "fenced"
)

// ErrFenced is wrapped by a driver asked to start a fenced machine.
var ErrFenced = errors.New("the server is fenced")

// ErrInvalid is wrapped by drivers for requests they cannot carry out as
// asked (shrinking a volume, ...).
var ErrInvalid = errors.New("invalid compute request")
