package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"

	"strata/agent/wire"
	"strata/controller/chaos"
	"strata/controller/compute"
	"strata/controller/configurations"
	"strata/controller/instances"
	"strata/controller/lifecycle"
	"strata/controller/registry"
)

// lookups caches registry rows while one response is built.
type lookups struct {
	s        *Server
	c        *call
	versions map[string]registry.Version
	flavors  map[string]registry.Flavor
}

func (s *Server) lookups(c *call) *lookups {
	return &lookups{s: s, c: c, versions: map[string]registry.Version{}, flavors: map[string]registry.Flavor{}}
}

func (l *lookups) version(id string) registry.Version {
	if v, ok := l.versions[id]; ok {
		return v
	}
	v, _ := l.s.Registry.Version(l.c.ctx(), id)
	l.versions[id] = v
	return v
}

func (s *Server) region() string {
	if s.Region == "" {
		return "RegionOne"
	}
	return s.Region
}

// instanceView renders an instance as Trove does; detail adds the volume
// usage, configuration and fault.
func (s *Server) instanceView(c *call, l *lookups, in instances.Instance, detail bool) map[string]any {
	status, operating := s.Lifecycle.Status(in)
	v := l.version(in.DatastoreVersionID)
	vol := map[string]any{"size": in.VolumeSizeGB}
	out := map[string]any{
		"id": in.ID, "name": in.Name, "status": status, "operating_status": operating,
		"links":     c.links("/instances/" + in.ID),
		"flavor":    map[string]any{"id": in.FlavorID, "links": c.links("/flavors/" + in.FlavorID)},
		"datastore": map[string]any{"type": v.DatastoreName, "version": v.Name, "version_number": v.Name},
		"region":    s.region(), "tenant_id": in.ProjectID,
		"volume":  vol,
		"access":  accessView(in.Access),
		"created": troveTime(in.CreatedAt), "updated": troveTime(in.UpdatedAt),
	}
	if in.Locality != "" {
		out["locality"] = in.Locality // as Trove shows it, replicas included
	}
	if in.Host != "" {
		// As Trove lists them: every address of the server, the one
		// clients use first; ip is the same addresses, bare.
		addr := map[string]any{"address": in.Host, "type": "private", "port": in.Port}
		addrs := []map[string]any{addr}
		srv, _ := serverOf(in)
		for _, a := range srv.Addresses {
			switch {
			case a.Address == in.Host:
				if a.Network != "" {
					addr["network"] = a.Network
				}
			case a.Type == "public":
				// Published at the datastore's standard port.
				addrs = append(addrs, map[string]any{"address": a.Address, "type": "public", "port": v.Port})
			default:
				// Another network's fixed address (Nova nics).
				other := map[string]any{"address": a.Address, "type": a.Type, "port": v.Port}
				if a.Network != "" {
					other["network"] = a.Network
				}
				addrs = append(addrs, other)
			}
		}
		ips := make([]string, len(addrs))
		for i, a := range addrs {
			ips[i] = a["address"].(string)
		}
		out["ip"] = ips
		out["addresses"] = addrs
		out["port"] = in.Port
	}
	if !detail {
		return out
	}
	if r := in.Reported; r != nil {
		if r.Volume != nil && r.Volume.TotalBytes > 0 {
			vol["used"] = float64(r.Volume.UsedBytes) / (1 << 30)
			vol["total"] = float64(r.Volume.TotalBytes) / (1 << 30)
		}
		out["service_status_updated"] = troveTime(r.ReceivedAt)
		out["agent_version"] = r.AgentVersion
	}
	if in.ConfigurationID != "" {
		cfg := map[string]any{"id": in.ConfigurationID, "links": c.links("/configurations/" + in.ConfigurationID)}
		if g, err := configurations.Get(c.ctx(), s.DB, in.ProjectID, in.ConfigurationID); err == nil {
			cfg["name"] = g.Name
		}
		out["configuration"] = cfg
	}
	if f := in.Fault; f != nil {
		out["fault"] = map[string]any{"message": f.Message, "created": troveTime(f.At), "details": f.Details}
	}
	if in.TLSFingerprint != "" {
		// strata's own field: the SHA-256 fingerprint of the certificate
		// the datastore presents to TLS clients, which they pin
		// (docs/datastores.md).
		out["tls_fingerprint"] = in.TLSFingerprint
	}
	s.replicationView(c, in, out)
	if in.ServerRestartReason != "" {
		// strata's own field: the server runs with outdated launch
		// settings (status RESTART_REQUIRED; the restart action restarts
		// the server).
		out["server_restart_reason"] = in.ServerRestartReason
	}
	return out
}

// accessView is Trove's access in force (as asked for at create, or as
// the last access change applied it); not given, the instance is not
// public.
func accessView(a *instances.Access) map[string]any {
	if a == nil {
		return map[string]any{"is_public": false, "allowed_cidrs": []string{}}
	}
	return map[string]any{"is_public": a.IsPublic, "allowed_cidrs": a.AllowedCIDRs}
}

func serverOf(in instances.Instance) (compute.Server, bool) {
	var s compute.Server
	if len(in.Server) == 0 || json.Unmarshal(in.Server, &s) != nil {
		return s, false
	}
	return s, true
}

func (s *Server) listInstances(w http.ResponseWriter, c *call) error {
	return s.writeInstanceList(w, c, false)
}

func (s *Server) listInstancesDetail(w http.ResponseWriter, c *call) error {
	return s.writeInstanceList(w, c, true)
}

func (s *Server) writeInstanceList(w http.ResponseWriter, c *call, detail bool) error {
	limit, marker, err := page(c)
	if err != nil {
		return err
	}
	list, err := instances.List(c.ctx(), s.DB, instances.ListOptions{Project: c.project})
	if err != nil {
		return err
	}
	list, links := paginate(c, "/instances", list, func(in instances.Instance) string { return in.ID }, limit, marker)
	l := s.lookups(c)
	out := []map[string]any{}
	for _, in := range list {
		out = append(out, s.instanceView(c, l, in, detail))
	}
	body := map[string]any{"instances": out}
	if links != nil {
		body["links"] = links
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

func (s *Server) showInstance(w http.ResponseWriter, c *call) error {
	in, err := instances.Get(c.ctx(), s.DB, c.instanceScope(), c.r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"instance": s.instanceView(c, s.lookups(c), in, true)})
	return nil
}

type nameRef struct {
	Name string `json:"name"`
}

type databaseReq struct {
	Name         string `json:"name"`
	CharacterSet string `json:"character_set"`
	Collate      string `json:"collate"`
}

type userReq struct {
	Name      string    `json:"name"`
	Password  string    `json:"password"`
	Host      string    `json:"host"`
	Databases []nameRef `json:"databases"`
}

func (d databaseReq) wire() wire.Database {
	return wire.Database{Name: d.Name, CharacterSet: d.CharacterSet, Collation: d.Collate}
}

func (u userReq) wire() wire.User {
	out := wire.User{Name: u.Name, Host: u.Host, Password: u.Password}
	for _, d := range u.Databases {
		out.Databases = append(out.Databases, d.Name)
	}
	return out
}

// createInstanceReq lists every field python-troveclient sends; the ones
// this controller cannot honour are refused when set.
type createInstanceReq struct {
	Instance *struct {
		Name      *string         `json:"name"`
		FlavorRef json.RawMessage `json:"flavorRef"`
		Volume    *struct {
			Size *int    `json:"size"`
			Type *string `json:"type"`
		} `json:"volume"`
		Databases        []databaseReq   `json:"databases"`
		Users            []userReq       `json:"users"`
		RestorePoint     json.RawMessage `json:"restorePoint"`
		AvailabilityZone *string         `json:"availability_zone"`
		Datastore        *struct {
			Type          string `json:"type"`
			Version       string `json:"version"`
			VersionNumber string `json:"version_number"`
		} `json:"datastore"`
		Nics          []json.RawMessage `json:"nics"`
		Configuration *string           `json:"configuration"`
		ReplicaOf     *string           `json:"replica_of"`
		ReplicaCount  *int              `json:"replica_count"`
		Modules       []json.RawMessage `json:"modules"`
		Locality      *string           `json:"locality"`
		RegionName    *string           `json:"region_name"`
		Access        *struct {
			IsPublic     bool     `json:"is_public"`
			AllowedCIDRs []string `json:"allowed_cidrs"`
		} `json:"access"`
	} `json:"instance"`
}

func isNull(raw json.RawMessage) bool {
	s := bytes.TrimSpace(raw)
	return len(s) == 0 || string(s) == "null"
}

func (s *Server) createInstance(w http.ResponseWriter, c *call) error {
	var req createInstanceReq
	if err := decode(c, &req); err != nil {
		return err
	}
	in := req.Instance
	if in == nil {
		return errorf(http.StatusBadRequest, `the body must be {"instance": {...}}`)
	}
	if in.Name == nil {
		return errorf(http.StatusBadRequest, "instance.name is required")
	}
	if in.ReplicaOf != nil && *in.ReplicaOf != "" {
		if in.AvailabilityZone != nil && *in.AvailabilityZone != "" {
			return errorf(http.StatusBadRequest, "instance.availability_zone: not supported for replicas by this controller")
		}
		return s.createReplica(w, c, *in.Name, in.ReplicaOf, in.ReplicaCount, in.FlavorRef, in.Datastore != nil, in.Volume != nil, in.Locality != nil,
			len(in.Databases)+len(in.Users) > 0)
	}
	switch {
	case in.ReplicaCount != nil && *in.ReplicaCount > 1:
		return errorf(http.StatusBadRequest, "Replica count only valid when creating replicas. Cannot create %d instances.", *in.ReplicaCount)
	case isNull(in.FlavorRef):
		return errorf(http.StatusBadRequest, "instance.flavorRef is required")
	case in.Volume == nil || in.Volume.Size == nil:
		return errorf(http.StatusBadRequest, "instance.volume.size is required (GB)")
	case len(in.Modules) > 0:
		return errorf(http.StatusBadRequest, "instance.modules: modules are not supported by this controller")
	case in.Volume.Type != nil && *in.Volume.Type != "":
		return errorf(http.StatusBadRequest, "instance.volume.type: volume types are not supported by this controller")
	// Fields it cannot honour are refused, never dropped: a caller that
	// asked for a region must not get an instance that silently has none
	// (a zone or a locality: refused by lifecycle unless the compute
	// driver places in zones or server groups).
	case in.RegionName != nil && *in.RegionName != "" && *in.RegionName != s.region():
		return errorf(http.StatusBadRequest, "instance.region_name %q: this controller serves region %q only", *in.RegionName, s.region())
	}
	flavor, err := flavorRefString(in.FlavorRef, "instance.flavorRef")
	if err != nil {
		return err
	}
	r := lifecycle.CreateRequest{ProjectID: c.project, Name: *in.Name, FlavorRef: flavor, VolumeSizeGB: *in.Volume.Size}
	if in.Datastore != nil {
		r.Datastore, r.Version = in.Datastore.Type, in.Datastore.Version
		if r.Version == "" {
			r.Version = in.Datastore.VersionNumber
		}
	}
	for _, d := range in.Databases {
		r.Databases = append(r.Databases, d.wire())
	}
	for _, u := range in.Users {
		r.Users = append(r.Users, u.wire())
	}
	if in.Configuration != nil {
		r.ConfigurationID = *in.Configuration
	}
	if !isNull(in.RestorePoint) {
		var rp struct {
			BackupRef string `json:"backupRef"`
		}
		dec := json.NewDecoder(bytes.NewReader(in.RestorePoint))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rp); err != nil || rp.BackupRef == "" {
			return errorf(http.StatusBadRequest, `instance.restorePoint: expected {"backupRef": "<backup id>"}`)
		}
		r.BackupID = rp.BackupRef
		r.AnyProjectBackup = c.principal.IsAdmin()
	}
	if r.NICs, err = parseNICs(in.Nics); err != nil {
		return err
	}
	if in.Access != nil {
		r.Access = &instances.Access{IsPublic: in.Access.IsPublic, AllowedCIDRs: in.Access.AllowedCIDRs}
	}
	if in.Locality != nil {
		r.Locality = *in.Locality
	}
	if in.AvailabilityZone != nil {
		r.AvailabilityZone = *in.AvailabilityZone
	}
	inst, rootPassword, err := s.Lifecycle.Create(c.ctx(), r)
	if err != nil {
		return err
	}
	view := s.instanceView(c, s.lookups(c), inst, true)
	if rootPassword != "" {
		// root_on_create: handed out here, once, as Trove does.
		view["password"] = rootPassword
	}
	writeJSON(w, http.StatusOK, map[string]any{"instance": view})
	return nil
}

// createReplica checks a replica request in Trove's order — a replica
// takes flavor, volume and datastore from its source, so naming them is
// refused with Trove's messages; the source must exist — and queues the
// replicas (lifecycle.CreateReplicas, docs/replication.md). The answer is
// the first replica, as Trove's.
func (s *Server) createReplica(w http.ResponseWriter, c *call, name string, source *string, count *int, flavorRef json.RawMessage,
	datastore, volume, locality, usersOrDatabases bool) error {
	switch {
	case !isNull(flavorRef):
		return errorf(http.StatusBadRequest, "Cannot specify flavor when creating replicas.")
	case datastore:
		return errorf(http.StatusBadRequest, "Cannot specify datastore when creating replicas.")
	case volume:
		return errorf(http.StatusBadRequest, "Cannot specify volume when creating replicas.")
	case locality:
		return errorf(http.StatusBadRequest, "Cannot specify locality when creating replicas.")
	}
	src, err := instances.Get(c.ctx(), s.DB, c.instanceScope(), *source)
	if err != nil {
		return err
	}
	if usersOrDatabases {
		return errorf(http.StatusBadRequest, "Cannot create a replica with users or databases.")
	}
	r := lifecycle.ReplicaRequest{ProjectID: c.instanceScope(), Name: name, SourceID: src.ID, Count: 1}
	if count != nil {
		r.Count = *count
	}
	made, err := s.Lifecycle.CreateReplicas(c.ctx(), r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"instance": s.instanceView(c, s.lookups(c), made[0], true)})
	return nil
}

// nicKeys are the keys a nics entry may have: Trove 18's (network_id or
// net-id, subnet_id, ip_address) and the older ones python-troveclient
// and Nova users know (v4-fixed-ip, port-id).
var nicKeys = map[string]string{"net-id": "network", "network_id": "network", "subnet_id": "subnet",
	"ip_address": "address", "v4-fixed-ip": "address", "port-id": "port"}

// parseNICs reads Trove's nics: at most one entry, as Trove's schema says;
// an empty entry asks for the default network. What the entries name is
// checked by the compute driver.
func parseNICs(list []json.RawMessage) ([]compute.NIC, error) {
	if len(list) > 1 {
		return nil, errorf(http.StatusBadRequest, "instance.nics: %d entries; an instance has one network interface (Trove takes at most one)", len(list))
	}
	var out []compute.NIC
	for _, raw := range list {
		if isNull(raw) {
			continue
		}
		var entry map[string]string
		if err := json.Unmarshal(raw, &entry); err != nil {
			return nil, errorf(http.StatusBadRequest, "instance.nics: each entry is an object of strings (net-id, subnet_id, ip_address, port-id)")
		}
		set := map[string]string{}
		for k, v := range entry {
			what, ok := nicKeys[k]
			if !ok {
				return nil, errorf(http.StatusBadRequest, "instance.nics: unknown key %q (known: net-id or network_id, subnet_id, ip_address or v4-fixed-ip, port-id)", trunc(k))
			}
			if v == "" {
				continue
			}
			if prev, dup := set[what]; dup && prev != v {
				return nil, errorf(http.StatusBadRequest, "instance.nics: two different %ss given (%q and %q)", what, trunc(prev), trunc(v))
			}
			set[what] = v
		}
		out = append(out, compute.NIC{NetworkID: set["network"], SubnetID: set["subnet"], FixedIP: set["address"], PortID: set["port"]})
	}
	return out, nil
}

func (s *Server) deleteInstance(w http.ResponseWriter, c *call) error {
	if err := s.Lifecycle.Delete(c.ctx(), c.instanceScope(), c.r.PathValue("id")); err != nil {
		return err
	}
	// The instance is going: its published logs go with it (nobody can
	// reach them once it is gone).
	if s.GuestLogs != nil {
		if err := s.GuestLogs.DiscardInstance(c.ctx(), c.r.PathValue("id")); err != nil {
			s.log().Warn("removing a deleted instance's published logs failed; discard them by hand", "instance", c.r.PathValue("id"), "err", err)
		}
	}
	return accepted(w)
}

// updateInstance answers PUT and PATCH /instances/{id}: attach or detach
// a configuration ("configuration": id or null), rename, change the
// access (Trove's is_public and allowed_cidrs), detach from a replication
// source, or upgrade to another datastore version ("datastore_version",
// alone: 202 once the upgrade task is queued). Configuration and access
// changes answer once applied, within the configure wait.
func (s *Server) updateInstance(w http.ResponseWriter, c *call) error {
	var req struct {
		Instance map[string]json.RawMessage `json:"instance"`
	}
	if err := decode(c, &req); err != nil {
		return err
	}
	if req.Instance == nil {
		return errorf(http.StatusBadRequest, `the body must be {"instance": {...}}`)
	}
	id := c.r.PathValue("id")
	current, err := instances.Get(c.ctx(), s.DB, c.instanceScope(), id)
	if err != nil {
		return err
	}
	did, detach := false, false
	var applies []lifecycle.Apply
	for key, raw := range req.Instance {
		switch key {
		case "configuration":
			if err := refuseOnReplica(c, s, current, "configuration groups"); err != nil {
				return err
			}
			var cfg *string
			if err := json.Unmarshal(raw, &cfg); err != nil {
				return errorf(http.StatusBadRequest, "instance.configuration: expected a configuration id or null")
			}
			target := ""
			if cfg != nil {
				target = *cfg
			}
			a, err := s.Lifecycle.SetConfiguration(c.ctx(), c.instanceScope(), id, target)
			if err != nil {
				return err
			}
			applies = append(applies, a)
			did = true
		case "name":
			var name string
			if err := json.Unmarshal(raw, &name); err != nil {
				return errorf(http.StatusBadRequest, "instance.name: expected a string")
			}
			if err := lifecycle.CheckInstanceName(name); err != nil {
				return err
			}
			if err := instances.Update(c.ctx(), s.DB, id, s.Lifecycle.Clock(), `name = ?`, name); err != nil {
				return err
			}
			did = true
		case "replica_of", "slave_of":
			// Detach: null or "" (Trove's client sends both keys).
			if !isNull(raw) && string(bytes.TrimSpace(raw)) != `""` {
				return errorf(http.StatusBadRequest, "instance.%s: only null or \"\" (detach from the source) may be given here", key)
			}
			if _, ok, err := instances.LinkOf(c.ctx(), s.DB, id); err != nil {
				return err
			} else if ok {
				detach = true
			}
		case "access":
			var acc *struct {
				IsPublic     *bool     `json:"is_public"`
				AllowedCIDRs *[]string `json:"allowed_cidrs"`
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&acc); err != nil || acc == nil {
				return errorf(http.StatusBadRequest, "instance.access: expected {\"is_public\": true or false, \"allowed_cidrs\": [IPv4 CIDR blocks]}")
			}
			// What is not given stays as it is.
			a := lifecycle.AccessChange{IsPublic: acc.IsPublic, AllowedCIDRs: acc.AllowedCIDRs}
			ap, err := s.Lifecycle.SetAccess(c.ctx(), c.instanceScope(), id, a)
			if err != nil {
				return err
			}
			applies = append(applies, ap)
			did = true
		case "auto_failover":
			// strata's own: {"grace_seconds": N} on a replication source
			// (0: off).
			var af *struct {
				GraceSeconds *int `json:"grace_seconds"`
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&af); err != nil || af == nil || af.GraceSeconds == nil {
				return errorf(http.StatusBadRequest, "instance.auto_failover: expected {\"grace_seconds\": seconds after the source's last heartbeat, 0 to turn it off}")
			}
			if err := s.Lifecycle.SetAutoFailover(c.ctx(), c.instanceScope(), id, *af.GraceSeconds); err != nil {
				return err
			}
			did = true
		case "datastore_version":
			// An upgrade is a task of its own: alone in the request.
			if len(req.Instance) != 1 {
				return errorf(http.StatusBadRequest, "instance.datastore_version: an upgrade is requested alone, not with other changes")
			}
			var version string
			if err := json.Unmarshal(raw, &version); err != nil || version == "" {
				return errorf(http.StatusBadRequest, "instance.datastore_version: expected the id or name of the version to upgrade to")
			}
			if err := s.Lifecycle.Upgrade(c.ctx(), c.instanceScope(), id, version); err != nil {
				return err
			}
			return accepted(w)
		default:
			return errorf(http.StatusBadRequest, "unknown field %q in instance", trunc(key))
		}
	}
	if detach {
		if err := s.Lifecycle.Detach(c.ctx(), c.instanceScope(), id); err != nil {
			return err
		}
		did = true
	}
	if !did {
		return errorf(http.StatusBadRequest, "nothing to update: give instance.configuration, instance.name, instance.access, instance.replica_of, instance.auto_failover or instance.datastore_version")
	}
	// Attaching or detaching answers once the guest applied it.
	s.answerApplied(w, c, http.StatusAccepted, applies)
	return nil
}

// instanceAction answers POST /instances/{id}/action: exactly one of
// restart, resize (volume), reset_status, promote_to_replica_source,
// eject_replica_source, rejoin_as_replica (strata's own: an ejected
// source comes back as a replica).
func (s *Server) instanceAction(w http.ResponseWriter, c *call) error {
	var req map[string]json.RawMessage
	if err := decode(c, &req); err != nil {
		return err
	}
	if len(req) != 1 {
		return errorf(http.StatusBadRequest, "give exactly one action (restart, resize, reset_status, promote_to_replica_source, eject_replica_source, rejoin_as_replica), not %d", len(req))
	}
	id := c.r.PathValue("id")
	for action, raw := range req {
		switch action {
		case "restart":
			if err := emptyObject(raw, "restart"); err != nil {
				return err
			}
			if err := s.Lifecycle.Restart(c.ctx(), c.instanceScope(), id); err != nil {
				return err
			}
		case "reset_status":
			if err := emptyObject(raw, "reset_status"); err != nil {
				return err
			}
			if err := s.Lifecycle.ResetStatus(c.ctx(), c.instanceScope(), id); err != nil {
				return err
			}
		case "promote_to_replica_source":
			if err := emptyObject(raw, "promote_to_replica_source"); err != nil {
				return err
			}
			if err := s.Lifecycle.Promote(c.ctx(), c.instanceScope(), id); err != nil {
				return err
			}
		case "eject_replica_source":
			if err := emptyObject(raw, "eject_replica_source"); err != nil {
				return err
			}
			if err := s.Lifecycle.Eject(c.ctx(), c.instanceScope(), id); err != nil {
				return err
			}
		case "rejoin_as_replica":
			if err := emptyObject(raw, "rejoin_as_replica"); err != nil {
				return err
			}
			if err := s.Lifecycle.Rejoin(c.ctx(), c.instanceScope(), id); err != nil {
				return err
			}
		case "resize":
			var rz struct {
				Volume *struct {
					Size *int `json:"size"`
				} `json:"volume"`
				FlavorRef json.RawMessage `json:"flavorRef"`
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&rz); err != nil {
				return errorf(http.StatusBadRequest, "resize: %s", jsonError(err))
			}
			if !isNull(rz.FlavorRef) {
				if rz.Volume != nil {
					return errorf(http.StatusBadRequest, "resize: give either flavorRef or volume, one resize at a time")
				}
				ref, err := flavorRefString(rz.FlavorRef, "resize.flavorRef")
				if err != nil {
					return err
				}
				if err := s.Lifecycle.ResizeFlavor(c.ctx(), c.instanceScope(), id, ref); err != nil {
					return err
				}
				continue
			}
			if rz.Volume == nil || rz.Volume.Size == nil {
				return errorf(http.StatusBadRequest, "resize.volume.size is required (GB)")
			}
			if err := s.Lifecycle.ResizeVolume(c.ctx(), c.instanceScope(), id, *rz.Volume.Size); err != nil {
				return err
			}
		default:
			return errorf(http.StatusBadRequest, "action %q is not supported (restart, resize, reset_status, promote_to_replica_source, eject_replica_source, rejoin_as_replica)", trunc(action))
		}
	}
	return accepted(w)
}

// flavorRefString reads a flavorRef: a flavor id, name or link, as a
// string or (Trove's clients send both) a number.
func flavorRefString(raw json.RawMessage, field string) (string, error) {
	var flavor string
	if err := json.Unmarshal(raw, &flavor); err == nil {
		return flavor, nil
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&n) != nil {
		return "", errorf(http.StatusBadRequest, "%s: expected a flavor id, name or link", field)
	}
	return n.String(), nil
}

func emptyObject(raw json.RawMessage, what string) error {
	var m map[string]json.RawMessage
	if isNull(raw) {
		return nil
	}
	if err := json.Unmarshal(raw, &m); err != nil || len(m) > 0 {
		return errorf(http.StatusBadRequest, "%s takes no arguments: send {}", what)
	}
	return nil
}

// instanceConfiguration answers GET /instances/{id}/configuration with the
// instance's effective configuration as its agent reports it from the
// server's files: the defaults rendered for its flavor with the attached
// group over them. An agent that cannot answer is an error with its
// message, never an empty configuration.
func (s *Server) instanceConfiguration(w http.ResponseWriter, c *call) error {
	var conf wire.EffectiveConfiguration
	if _, err := s.guestQuery(c, wire.KindGetConfiguration, nil, &conf); err != nil {
		return err
	}
	if conf.Values == nil {
		return errorf(http.StatusBadGateway, "the instance's agent reported no configuration")
	}
	writeJSON(w, http.StatusOK, map[string]any{"instance": map[string]any{"configuration": conf.Values}})
	return nil
}

// guest loads an instance that must be reachable for an agent call.
func (s *Server) guest(c *call) (instances.Instance, error) {
	return s.Lifecycle.Guest(c.ctx(), c.instanceScope(), c.r.PathValue("id"))
}

// guestQuery runs an operation on the request's instance, maps a failed
// result and decodes a successful one into out (nil: no result wanted). It
// returns the instance, for the links and messages of the answer.
func (s *Server) guestQuery(c *call, kind wire.Kind, args, out any) (instances.Instance, error) {
	in, err := s.guest(c)
	if err != nil {
		return in, err
	}
	res, err := s.Lifecycle.Call(c.ctx(), in, kind, args)
	if err != nil {
		return in, err
	}
	if res.Error != nil {
		return in, opError(res.Error)
	}
	if out != nil {
		return in, res.Decode(out)
	}
	return in, nil
}

// guestCast runs an operation Trove answers with 202: if the agent is slow
// the request is accepted anyway (the op stays queued).
func (s *Server) guestCast(w http.ResponseWriter, c *call, kind wire.Kind, args any) error {
	_, _, err := s.guestCastIn(w, c, kind, args)
	return err
}

// guestCastIn is guestCast that also returns the instance and whether
// the guest carried the operation out before the answer (false: 202 with
// the operation still queued).
func (s *Server) guestCastIn(w http.ResponseWriter, c *call, kind wire.Kind, args any) (instances.Instance, bool, error) {
	in, err := s.guest(c)
	if err != nil {
		return in, false, err
	}
	res, err := s.Lifecycle.Call(c.ctx(), in, kind, args)
	if err != nil && !isTimeout(err) {
		return in, false, err
	}
	if err == nil && res.Error != nil {
		return in, false, opError(res.Error)
	}
	accepted(w)
	if err != nil {
		// Answered 202 while the guest has not carried it out yet.
		http.NewResponseController(w).Flush()
		chaos.Reach("api.accepted", in.ID)
		return in, false, nil
	}
	return in, true, nil
}

// userCast is guestCast for a change of users or root on a source: once
// the guest carried it out, the answer goes out and the source's users
// are carried to its replicas (lifecycle.SyncUsers: Redis, whose
// replication does not carry them). A change still queued at the answer
// (202 after the guest call timeout) is carried by the next one.
func (s *Server) userCast(w http.ResponseWriter, c *call, kind wire.Kind, args any) error {
	in, done, err := s.guestCastIn(w, c, kind, args)
	if err == nil && done {
		s.syncUsers(w, c, in, kind)
	}
	return err
}

// syncUsers flushes the answer already written, then syncs in's users to
// its replicas.
func (s *Server) syncUsers(w http.ResponseWriter, c *call, in instances.Instance, kind wire.Kind) {
	http.NewResponseController(w).Flush()
	s.Lifecycle.SyncUsers(c.ctx(), in.ID, kind)
}

func isTimeout(err error) bool { return errors.Is(err, lifecycle.ErrGuestTimeout) }
