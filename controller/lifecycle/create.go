package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/chaos"
	"strata/controller/compute"
	"strata/controller/configurations"
	"strata/controller/imagestore"
	"strata/controller/instances"
	"strata/controller/quotas"
	"strata/controller/registry"
	"strata/controller/store"
	"strata/controller/tasks"
)

// CreateRequest is an instance to create.
type CreateRequest struct {
	ProjectID string
	Name      string
	// FlavorRef is a flavor id, name or link.
	FlavorRef    string
	VolumeSizeGB int
	// Datastore and Version by name or id; an empty Datastore picks the
	// Manager's DefaultDatastore, else the only datastore; an empty
	// Version the default version.
	Datastore       string
	Version         string
	Databases       []wire.Database
	Users           []wire.User
	ConfigurationID string
	// BackupID restores the new instance from that backup (and its
	// chain) instead of preparing an empty datastore.
	BackupID string
	// AnyProjectBackup lets BackupID name another project's backup (the
	// admin role).
	AnyProjectBackup bool
	// NICs are the network interfaces asked for (Trove's nics); none
	// means the compute driver's default network.
	NICs []compute.NIC
	// Access is Trove's access, stored and shown (nil: not given).
	Access *instances.Access
	// AvailabilityZone is Trove's availability_zone: honoured by a
	// compute.ZonePlacer, refused by other drivers.
	AvailabilityZone string
	// Locality is Trove's locality (affinity, anti-affinity): the
	// instance founds a server group its replicas join; honoured by a
	// compute.GroupPlacer, refused by other drivers.
	Locality string
}

// createPayload is the create task's payload. Users carry passwords until
// prepare is queued (then the op holds them, until its result).
type createPayload struct {
	Databases []wire.Database `json:"databases,omitempty"`
	Users     []wire.User     `json:"users,omitempty"`
	// ConfigDigest is the configuration set prepare applies.
	ConfigDigest string `json:"config_digest,omitempty"`
	// RestoreChain, when set, restores the backups (full first) instead
	// of prepare.
	RestoreChain []string `json:"restore_chain,omitempty"`
	// RootPassword is the root password handed out in the create
	// response (root_on_create); like Users' passwords it moves to the
	// prepare operation's arguments and is dropped from the task then.
	RootPassword string `json:"root_password,omitempty"`
}

func (m *Manager) checkCreate(ctx context.Context, r *CreateRequest) (registry.Version, registry.Flavor, []string, error) {
	v, f, err := m.checkCreateInstance(ctx, r)
	if err != nil || r.BackupID == "" {
		return v, f, nil, err
	}
	if len(r.Databases) > 0 || len(r.Users) > 0 {
		return v, f, nil, wrap(ErrBadRequest, "databases and users come from the backup; a restore takes none")
	}
	if m.Restores == nil {
		return v, f, nil, wrap(ErrBadRequest, "this controller has no backup store; it cannot restore")
	}
	project := r.ProjectID
	if r.AnyProjectBackup {
		project = ""
	}
	chain, err := m.Restores.CheckRestore(ctx, project, r.BackupID, v, r.VolumeSizeGB)
	return v, f, chain, err
}

func (m *Manager) checkCreateInstance(ctx context.Context, r *CreateRequest) (registry.Version, registry.Flavor, error) {
	var v registry.Version
	var f registry.Flavor
	if err := CheckInstanceName(r.Name); err != nil {
		return v, f, err
	}
	if r.Access != nil {
		a, err := m.checkAccess(ctx, *r.Access)
		if err != nil {
			return v, f, err
		}
		r.Access = &a
	}
	if r.VolumeSizeGB < 1 || r.VolumeSizeGB > m.MaxVolume() {
		return v, f, wrap(ErrBadRequest, "volume size %d GB: want 1 to %d", r.VolumeSizeGB, m.MaxVolume())
	}
	if len(r.Databases) > wire.MaxItemsPerOp || len(r.Users) > wire.MaxItemsPerOp {
		return v, f, wrap(ErrBadRequest, "at most %d databases and %d users", wire.MaxItemsPerOp, wire.MaxItemsPerOp)
	}
	dbs := map[string]bool{}
	for _, d := range r.Databases {
		if err := CheckDatabaseName(d.Name); err != nil {
			return v, f, err
		}
		if err := CheckCharset("character set", d.CharacterSet); err != nil {
			return v, f, err
		}
		if err := CheckCharset("collation", d.Collation); err != nil {
			return v, f, err
		}
		if dbs[d.Name] {
			return v, f, wrap(ErrBadRequest, "database %q is listed twice", d.Name)
		}
		dbs[d.Name] = true
	}
	users := map[string]bool{}
	for _, u := range r.Users {
		if err := CheckUserName(u.Name, u.Host); err != nil {
			return v, f, err
		}
		if err := CheckPassword(u.Password); err != nil {
			return v, f, fmt.Errorf("user %s: %w", u.Name, err)
		}
		key := u.Name + "@" + u.Host
		if users[key] {
			return v, f, wrap(ErrBadRequest, "user %q is listed twice", u.Name)
		}
		users[key] = true
		for _, db := range u.Databases {
			if !dbs[db] {
				return v, f, wrap(ErrBadRequest, "user %s: database %q is not among the databases created with the instance", u.Name, show(db))
			}
		}
	}

	ds, version, byDefault := r.Datastore, r.Version, false
	if ds == "" && m.DefaultDatastore != "" {
		// Trove's default_datastore: a create without a datastore takes
		// it, with the operator's default version or else the
		// datastore's own.
		ds, byDefault = m.DefaultDatastore, true
		if version == "" {
			version = m.DefaultVersion
		}
	}
	if ds == "" {
		all, err := m.Registry.Datastores(ctx)
		if err != nil {
			return v, f, err
		}
		if len(all) != 1 {
			return v, f, wrap(ErrBadRequest, "datastore.type is required: %d datastores are registered", len(all))
		}
		ds = all[0].ID
	}
	v, err := m.Registry.FindVersion(ctx, ds, version)
	if errors.Is(err, registry.ErrNotFound) && byDefault {
		return v, f, wrap(ErrNotFound, "the default datastore %s %s (--default-datastore, --default-datastore-version): %v", show(ds), show(version), err)
	}
	if errors.Is(err, registry.ErrNotFound) {
		return v, f, wrap(ErrNotFound, "%v", err)
	}
	if err != nil {
		return v, f, err
	}
	if !v.Active {
		return v, f, wrap(ErrBadRequest, "datastore version %s %s is not active", v.DatastoreName, v.Name)
	}
	if _, err := m.Images.Get(ctx, v.ImageID); errors.Is(err, imagestore.ErrNotFound) {
		return v, f, wrap(ErrUnprocessable, "the image of datastore version %s %s (%s) is not in the image store", v.DatastoreName, v.Name, v.ImageID)
	} else if err != nil {
		return v, f, err
	}
	ref := r.FlavorRef
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:] // a flavor link
	}
	if ref == "" {
		return v, f, wrap(ErrBadRequest, "flavorRef is required")
	}
	f, err = m.Registry.Flavor(ctx, ref)
	if errors.Is(err, registry.ErrNotFound) {
		return v, f, wrap(ErrNotFound, "flavor %q not found", show(ref))
	}
	if err != nil {
		return v, f, err
	}
	if ok, err := m.Registry.FlavorAllowed(ctx, v.ID, f); err != nil {
		return v, f, err
	} else if !ok {
		return v, f, wrap(ErrBadRequest, "flavor %s is not in the flavor list of datastore %s version %s (GET /datastores/%s/versions/%s/flavors lists them)",
			f.Name, v.DatastoreName, v.Name, v.DatastoreName, v.Name)
	}
	// Networks last: the driver may ask its cloud.
	nics, err := m.Compute.ResolveNICs(ctx, r.NICs)
	if errors.Is(err, compute.ErrInvalid) {
		return v, f, wrap(ErrBadRequest, "instance.nics: %s", strings.TrimPrefix(err.Error(), compute.ErrInvalid.Error()+": "))
	}
	if err != nil {
		return v, f, fmt.Errorf("checking the instance's networks: %w", err)
	}
	r.NICs = nics
	if r.AvailabilityZone != "" {
		zp, ok := m.Compute.(compute.ZonePlacer)
		if !ok {
			return v, f, wrap(ErrBadRequest, "instance.availability_zone: this controller's compute driver places every instance itself; it has no availability zones")
		}
		if err := zp.CheckAvailabilityZone(ctx, r.AvailabilityZone); errors.Is(err, compute.ErrInvalid) {
			return v, f, wrap(ErrBadRequest, "instance.availability_zone: %s", strings.TrimPrefix(err.Error(), compute.ErrInvalid.Error()+": "))
		} else if err != nil {
			return v, f, fmt.Errorf("checking the availability zone: %w", err)
		}
	}
	if r.Locality != "" {
		if err := m.checkLocality(ctx, r.Locality); err != nil {
			return v, f, err
		}
	}
	if r.ConfigurationID != "" {
		g, err := configurations.Get(ctx, m.DB, r.ProjectID, r.ConfigurationID)
		if errors.Is(err, configurations.ErrNotFound) {
			return v, f, wrap(ErrNotFound, "configuration %q not found", show(r.ConfigurationID))
		}
		if err != nil {
			return v, f, err
		}
		if g.DatastoreVersionID != v.ID {
			return v, f, wrap(ErrBadRequest, "configuration %s is for another datastore version", g.ID)
		}
	}
	return v, f, nil
}

// Create records a new instance (BUILD) and queues its create task. When
// the version has root_on_create (and the instance is not restored from a
// backup, whose accounts it takes), it also returns the root password
// prepare will set: the caller hands it out once, as Trove's create
// response does; the controller keeps it only until prepare ends.
func (m *Manager) Create(ctx context.Context, r CreateRequest) (instances.Instance, string, error) {
	v, f, chain, err := m.checkCreate(ctx, &r)
	if err != nil {
		return instances.Instance{}, "", err
	}
	var rootPassword string
	if v.RootOnCreate && len(chain) == 0 {
		rootPassword = rand.Text() + rand.Text()
	}
	now := m.now()
	nics, err := json.Marshal(r.NICs)
	if err != nil {
		return instances.Instance{}, "", err
	}
	d := instances.Desired{ID: store.NewID(), ProjectID: r.ProjectID, Name: r.Name, DatastoreVersionID: v.ID, FlavorID: f.ID,
		VolumeSizeGB: r.VolumeSizeGB, ConfigurationID: r.ConfigurationID, Task: instances.TaskBuilding, TaskStartedAt: now, CreatedAt: now,
		Access: r.Access, NICs: nics, AvailabilityZone: r.AvailabilityZone}
	if r.Locality != "" {
		d.Locality, d.ServerGroup = r.Locality, d.ID
	}
	err = m.DB.InTx(ctx, func(tx *store.Tx) error {
		if m.Quotas != nil {
			if err := m.Quotas.Check(ctx, tx, r.ProjectID, quotas.Limits{quotas.Instances: 1, quotas.Volumes: int64(d.VolumeSizeGB)}); err != nil {
				return err
			}
		}
		if err := instances.Insert(ctx, tx, d); err != nil {
			return err
		}
		_, err := tasks.Enqueue(ctx, tx, tasks.New{InstanceID: d.ID, Kind: KindCreate, Step: "volume",
			Payload:  createPayload{Databases: r.Databases, Users: r.Users, RestoreChain: chain, RootPassword: rootPassword},
			Deadline: now.Add(v.BootTimeout)}, now)
		return err
	})
	if err != nil {
		return instances.Instance{}, "", err
	}
	m.kick()
	m.log().Info("instance create queued", "instance", d.ID, "project", d.ProjectID, "datastore", v.DatastoreName, "version", v.Name,
		"flavor", f.Name, "volume_gb", d.VolumeSizeGB, "restore_from", r.BackupID, "root_on_create", rootPassword != "")
	in, err := instances.Get(ctx, m.DB, r.ProjectID, d.ID)
	return in, rootPassword, err
}

func prepareOpID(instanceID string) string { return "prepare-" + instanceID }
func restoreOpID(instanceID string) string { return "restore-" + instanceID }

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func volumeOf(in instances.Instance) (compute.Volume, bool) {
	var v compute.Volume
	if len(in.Volume) == 0 || json.Unmarshal(in.Volume, &v) != nil {
		return v, false
	}
	return v, true
}

// nicsOf are the instance's resolved network interfaces (none for
// instances made before they were stored: the driver's default).
func nicsOf(in instances.Instance) []compute.NIC {
	var nics []compute.NIC
	if len(in.NICs) > 0 {
		json.Unmarshal(in.NICs, &nics)
	}
	return nics
}

func serverOf(in instances.Instance) (compute.Server, bool) {
	var s compute.Server
	if len(in.Server) == 0 || json.Unmarshal(in.Server, &s) != nil {
		return s, false
	}
	return s, true
}

func (m *Manager) runCreate(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	in, err := m.taskInstance(ctx, t)
	if err != nil {
		return tasks.Result{}, err
	}
	switch t.Step {
	case "volume":
		vol, err := m.Compute.CreateVolume(ctx, compute.VolumeSpec{InstanceID: in.ID, Name: in.Name, SizeGB: in.VolumeSizeGB,
			AvailabilityZone: in.AvailabilityZone})
		if errors.Is(err, compute.ErrInvalid) {
			return tasks.Result{}, tasks.Fail("", "creating the data volume: %v", err)
		}
		if err != nil {
			return tasks.Result{}, fmt.Errorf("create volume: %w", err)
		}
		data, _ := json.Marshal(vol)
		if err := instances.Update(ctx, m.DB, in.ID, m.now(), `volume = ?`, string(data)); err != nil {
			return tasks.Result{}, err
		}
		return tasks.Result{Next: "server"}, nil
	case "server":
		return m.createServer(ctx, t, in)
	case "prepare":
		return m.submitPrepare(ctx, t, in)
	case "restore":
		return m.restore(ctx, t, in)
	case "wait":
		return m.waitPrepared(ctx, t, in)
	// A replica's steps (replicas.go).
	case "seed":
		return m.seedStep(ctx, t)
	case "account", "account-queue":
		return m.accountStep(ctx, t, in)
	case "attach":
		return m.attachStep(ctx, t, in)
	case "linked":
		return m.linkedStep(ctx, t, in)
	}
	return tasks.Result{}, tasks.Fail("", "create task at unknown step %q", t.Step)
}

func (m *Manager) createServer(ctx context.Context, t *tasks.Task, in instances.Instance) (tasks.Result, error) {
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return tasks.Result{}, err
	}
	f, err := m.Registry.Flavor(ctx, in.FlavorID)
	if err != nil {
		return tasks.Result{}, err
	}
	img, err := m.Images.Get(ctx, v.ImageID)
	if err != nil {
		return tasks.Result{}, tasks.Fail("", "image %s of %s %s: %v", v.ImageID, v.DatastoreName, v.Name, err)
	}
	if err := m.Images.Verify(ctx, img.ID); errors.Is(err, imagestore.ErrChecksumMismatch) {
		return tasks.Result{}, tasks.Fail("", "refusing to boot a corrupted image: %v", err)
	} else if errors.Is(err, imagestore.ErrInvalid) {
		return tasks.Result{}, tasks.Fail("", "refusing to boot image %s: %v", img.ID, err)
	} else if err != nil {
		return tasks.Result{}, err
	}
	vol, ok := volumeOf(in)
	if !ok {
		return tasks.Result{Next: "volume"}, nil
	}
	// A fresh one-time token for this config drive. A token from an
	// earlier run of this step stays valid: its VM may be running still
	// (the controller died after booting it, and a running VM keeps the
	// config drive it booted with). The first enrolment revokes the
	// instance's other tokens.
	drive, token, err := m.configDrive(in, v, vol)
	if err != nil {
		return tasks.Result{}, err
	}
	// Good for the version's boot timeout: an instance that has not
	// enrolled by then is in ERROR anyway. A token an earlier run of this
	// step wrote stays (its VM may still be booting with it); the first
	// enrolment voids the other.
	if err := agentendpoint.AddEnrollment(ctx, m.DB, in.ID, token, m.now(), m.now().Add(v.BootTimeout)); err != nil {
		return tasks.Result{}, err
	}
	srv, err := m.Compute.CreateServer(ctx, serverSpec(in, v, f, img, vol, drive))
	if errors.Is(err, compute.ErrInvalid) {
		return tasks.Result{}, tasks.Fail("", "creating the server: %v", err)
	}
	if err != nil {
		return tasks.Result{}, fmt.Errorf("create server: %w", err)
	}
	// Published, or limited to some clients (a Nova driver's security
	// group rules): the driver applies it before the instance is ACTIVE.
	if in.Access != nil && (in.Access.IsPublic || len(in.Access.AllowedCIDRs) > 0) {
		if srv, err = m.publish(ctx, srv, v.Port, in.Access); err != nil {
			return tasks.Result{}, err
		}
	}
	ep, _ := srv.Endpoint(v.Port)
	data, _ := json.Marshal(srv)
	if err := instances.Update(ctx, m.DB, in.ID, m.now(), `server = ?, host = ?, port = ?`, string(data), ep.Host, ep.Port); err != nil {
		return tasks.Result{}, err
	}
	chaos.Reach("create.booted", in.ID) // before the agent enrols
	return tasks.Result{Next: "prepare"}, nil
}

func (m *Manager) submitPrepare(ctx context.Context, t *tasks.Task, in instances.Instance) (tasks.Result, error) {
	var p createPayload
	if err := t.Decode(&p); err != nil {
		return tasks.Result{}, tasks.Fail("", "%v", err)
	}
	if len(p.RestoreChain) > 0 {
		return tasks.Result{Next: "restore"}, nil
	}
	data, digest, err := m.prepareArgs(ctx, in, wire.PrepareArgs{Databases: p.Databases, Users: p.Users,
		EnableRoot: p.RootPassword != "", RootPassword: p.RootPassword})
	if err != nil {
		return tasks.Result{}, err
	}
	p.ConfigDigest = digest
	op := wire.Operation{ID: prepareOpID(in.ID), Kind: wire.KindPrepare, Args: data}
	if err := m.queue(ctx, t, in.ID, op); err != nil {
		return tasks.Result{}, fmt.Errorf("queue prepare: %w", err)
	}
	// The queued op carries the passwords now; the task forgets them.
	p.Users, p.RootPassword = nil, ""
	return tasks.Result{Next: "wait", Payload: p, After: time.Second}, nil
}

// configDrive is what a new guest of the instance boots with: its
// bootstrap, naming a fresh one-time enrolment token (returned, for the
// caller to record), and the chaos plan under test.
func (m *Manager) configDrive(in instances.Instance, v registry.Version, vol compute.Volume) (map[string][]byte, string, error) {
	token := wire.NewEnrollmentToken()
	boot := wire.Bootstrap{Format: wire.BootstrapFormat, InstanceID: in.ID, Controllers: m.Controllers, ControllerHostKey: m.HostKey,
		EnrollmentToken: token, Datastore: wire.DatastoreRef{Manager: v.Manager, Version: v.Name},
		HeartbeatSeconds: m.heartbeatSeconds(), DataDevice: vol.GuestDevice}
	if err := boot.Validate(); err != nil {
		return nil, "", tasks.Fail("", "the controller cannot write a valid bootstrap: %v", err)
	}
	bootJSON, _ := json.MarshalIndent(boot, "", "  ")
	drive := map[string][]byte{"strata/bootstrap.json": bootJSON}
	if plan := chaos.GuestPlan(); plan != "" {
		drive[wire.ChaosFile] = []byte(plan)
	}
	return drive, token, nil
}

// serverSpec is the server the instance runs on: the image, the flavor's
// size, the data volume and the config drive.
func serverSpec(in instances.Instance, v registry.Version, f registry.Flavor, img imagestore.Image, vol compute.Volume, drive map[string][]byte) compute.ServerSpec {
	return compute.ServerSpec{
		InstanceID: in.ID, Name: in.Name, Image: compute.ImageRef{ID: img.ID, Location: img.Location, Format: img.DiskFormat},
		RAMMB: f.RAMMB, VCPUs: f.VCPUs, RootDiskGB: f.DiskGB, Volume: vol, ConfigDrive: drive,
		Ports: []int{v.Port}, NICs: nicsOf(in), AvailabilityZone: in.AvailabilityZone, ServerGroup: serverGroupOf(in),
	}
}

// serverGroupOf is the server group an instance is placed in (nil: none).
func serverGroupOf(in instances.Instance) *compute.ServerGroup {
	if in.Locality == "" {
		return nil
	}
	return &compute.ServerGroup{Key: in.ServerGroup, Policy: in.Locality}
}

// checkLocality refuses a policy Trove does not have, or any where the
// compute driver has no server groups.
func (m *Manager) checkLocality(ctx context.Context, policy string) error {
	if policy != compute.LocalityAffinity && policy != compute.LocalityAntiAffinity {
		return wrap(ErrBadRequest, "instance.locality %q: must be %s or %s", show(policy), compute.LocalityAffinity, compute.LocalityAntiAffinity)
	}
	gp, ok := m.Compute.(compute.GroupPlacer)
	if !ok {
		return wrap(ErrBadRequest, "instance.locality: this controller's compute driver has no server groups (affinity, anti-affinity); it places every instance itself")
	}
	if err := gp.CheckLocality(ctx, policy); errors.Is(err, compute.ErrInvalid) {
		return wrap(ErrBadRequest, "instance.locality: %s", strings.TrimPrefix(err.Error(), compute.ErrInvalid.Error()+": "))
	} else if err != nil {
		return fmt.Errorf("checking the instance's locality: %w", err)
	}
	return nil
}

// prepareArgs completes a prepare's arguments with what the instance's
// flavor, datastore version (its authentication plugin) and configuration
// group say (the group's digest is returned, to
// be recorded as applied once the guest reports) and encodes them.
func (m *Manager) prepareArgs(ctx context.Context, in instances.Instance, args wire.PrepareArgs) (data []byte, digest string, err error) {
	f, err := m.Registry.Flavor(ctx, in.FlavorID)
	if err != nil {
		return nil, "", err
	}
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return nil, "", err
	}
	args.MemoryMB, args.AuthPlugin = f.RAMMB, v.AuthPlugin
	cfg, err := m.configurationArgs(ctx, in)
	if err != nil {
		return nil, "", err
	}
	if in.ConfigurationID != "" {
		args.Configuration = &cfg
	}
	data, err = json.Marshal(args)
	return data, configDigest(cfg), err
}

// restore makes the new instance's datastore from its backup chain: the
// step serves the chain's streams until the guest reports. The guest
// keeps its datastore stopped unless the whole chain arrived intact.
func (m *Manager) restore(ctx context.Context, t *tasks.Task, in instances.Instance) (tasks.Result, error) {
	var p createPayload
	if err := t.Decode(&p); err != nil {
		return tasks.Result{}, tasks.Fail("", "%v", err)
	}
	if m.Restores == nil {
		return tasks.Result{}, tasks.Fail("", "this controller has no backup store; it cannot restore")
	}
	f, err := m.Registry.Flavor(ctx, in.FlavorID)
	if err != nil {
		return tasks.Result{}, err
	}
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return tasks.Result{}, err
	}
	base := wire.RestoreArgs{MemoryMB: f.RAMMB, AuthPlugin: v.AuthPlugin}
	var rp replicaTaskPayload
	if t.Decode(&rp) == nil && rp.ReplicaOf != "" && v.Manager == managerPostgreSQL {
		// A PostgreSQL replica's seed stays a standby: ending recovery
		// would fork a timeline of its own (docs/replication.md).
		base.Standby = true
	}
	if in.ConfigurationID != "" {
		cfg, err := m.configurationArgs(ctx, in)
		if err != nil {
			return tasks.Result{}, err
		}
		base.Configuration = &cfg
	}
	if err := m.Restores.Restore(ctx, in.ID, restoreOpID(in.ID), p.RestoreChain, base, t.Deadline); err != nil {
		var fail *tasks.Failure
		if errors.As(err, &fail) {
			fail.Details = m.consoleTail(ctx, in)
		}
		return tasks.Result{}, err
	}
	return tasks.Result{Next: "wait"}, nil
}

func (m *Manager) waitPrepared(ctx context.Context, t *tasks.Task, in instances.Instance) (tasks.Result, error) {
	var p createPayload
	if err := t.Decode(&p); err != nil {
		return tasks.Result{}, tasks.Fail("", "%v", err)
	}
	opID, what := prepareOpID(in.ID), "prepare"
	if len(p.RestoreChain) > 0 {
		opID, what = restoreOpID(in.ID), "restore"
	}
	res, done, err := m.opDone(ctx, in.ID, opID, what)
	var fail *tasks.Failure
	if errors.As(err, &fail) {
		if res.Error.Code == wire.CodeExpired {
			// Never delivered: the guest did not come up in time.
			fail.Reason = m.silentGuestReason(in, t.Deadline.Sub(t.CreatedAt))
		}
		fail.Details = m.consoleTail(ctx, in)
		return tasks.Result{}, fail
	}
	if err != nil {
		return tasks.Result{}, err
	}
	if done {
		var p replicaTaskPayload
		t.Decode(&p)
		fingerprint := m.reportedFingerprint(in.ID, res.Payload)
		if p.ReplicaOf != "" {
			// Restored: now the link (replicas.go); ACTIVE only once it runs.
			if err := instances.Update(ctx, m.DB, in.ID, m.now(), `tls_fingerprint = ?`, fingerprint); err != nil {
				return tasks.Result{}, err
			}
			return tasks.Result{Next: "account"}, nil
		}
		if err := instances.Update(ctx, m.DB, in.ID, m.now(), `task = ?, task_started_at = NULL, configuration_applied = ?, tls_fingerprint = ?`,
			string(instances.TaskNone), nullIfEmpty(p.ConfigDigest), fingerprint); err != nil {
			return tasks.Result{}, err
		}
		m.log().Info("instance prepared", "instance", in.ID, "seconds", m.now().Sub(in.CreatedAt).Seconds())
		return tasks.Result{Done: true}, nil
	}
	if r := in.Reported; r != nil && r.Status == wire.StatusFailed {
		return tasks.Result{}, tasks.Fail(m.consoleTail(ctx, in), "the guest reports that preparing the database failed: %s", r.StatusDetail)
	}
	// Keep the VM up while waiting (a controller restart stops it).
	if srv, ok := serverOf(in); ok {
		if st, err := m.Compute.ServerState(ctx, srv); err == nil && st == compute.StateStopped {
			if err := m.Compute.StartServer(ctx, srv); err != nil {
				return tasks.Result{}, err
			}
		}
	}
	if !t.Deadline.IsZero() && m.now().After(t.Deadline) {
		return tasks.Result{}, tasks.Fail(m.consoleTail(ctx, in), "%s", m.silentGuestReason(in, t.Deadline.Sub(t.CreatedAt)))
	}
	return tasks.Result{After: 2 * time.Second}, nil
}

// fingerprintPattern is wire.PrepareResult.TLSFingerprint's form.
var fingerprintPattern = regexp.MustCompile(`^([0-9a-f]{2}:){31}[0-9a-f]{2}$`)

// reportedFingerprint is the TLS fingerprint in a prepare's or restore's
// result ("" when there is none). The guest is not trusted: anything but
// a well-formed fingerprint is dropped with a warning, never shown.
func (m *Manager) reportedFingerprint(instanceID string, payload json.RawMessage) string {
	var r struct {
		TLSFingerprint string `json:"tls_fingerprint"`
	}
	if len(payload) == 0 || json.Unmarshal(payload, &r) != nil || r.TLSFingerprint == "" {
		return ""
	}
	if !fingerprintPattern.MatchString(r.TLSFingerprint) {
		m.log().Warn("the guest reported a malformed TLS fingerprint; not shown", "instance", instanceID, "length", len(r.TLSFingerprint))
		return ""
	}
	return r.TLSFingerprint
}

// silentGuestReason says what is known about a guest that did not become
// ready in time.
func (m *Manager) silentGuestReason(in instances.Instance, timeout time.Duration) string {
	r := in.Reported
	switch {
	case r == nil:
		return fmt.Sprintf("the guest agent never reported within the boot timeout of %s (it did not enroll or send a heartbeat)", timeout.Round(time.Second))
	default:
		return fmt.Sprintf("the guest did not become ready within the boot timeout of %s (last heartbeat %s ago: %s %s)",
			timeout.Round(time.Second), m.now().Sub(r.ReceivedAt).Round(time.Second), r.Status, r.StatusDetail)
	}
}
