// Package instances keeps database instances in two parts that are never
// mixed: Desired — what the controller asked for and decided (name, size,
// task in progress, fault) in the instances table, written only by the
// controller — and Reported — what the instance's agent last said in a
// heartbeat (instance_reports, written only by the agent endpoint). The
// status the API shows is derived from both by Status, after Trove's rules.
//
// It stores and derives; it does not act. Tasks that change instances
// live in lifecycle/.
package instances

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"strata/agent/wire"
	"strata/controller/store"
)

// ErrNotFound is returned for an unknown, deleted or other project's
// instance.
var ErrNotFound = errors.New("instance not found")

// Task is what the controller is doing to an instance (Trove's task
// status).
type Task string

const (
	TaskNone      Task = "NONE"
	TaskBuilding  Task = "BUILDING"
	TaskRebooting Task = "REBOOTING"
	TaskResizing  Task = "RESIZING"
	TaskDeleting  Task = "DELETING"
	// TaskBackingUp: a backup streams from the instance (Trove shows it
	// as BACKUP); other tasks and a second backup wait or are refused.
	TaskBackingUp Task = "BACKING_UP"
	// TaskRebuilding: the instance moves to a new image, keeping its data
	// volume (Trove's REBUILD).
	TaskRebuilding Task = "REBUILDING"
	// TaskPromoting: a switchover runs in the instance's replication
	// group (every member has it; Trove's PROMOTE).
	TaskPromoting Task = "PROMOTING"
	// TaskEjecting: a failover runs in the instance's replication group
	// (Trove's EJECT).
	TaskEjecting Task = "EJECTING"
	// TaskRejoining: a source ejected from its replication group comes
	// back as a replica of the group's source (strata's own).
	TaskRejoining Task = "REJOINING"
	// TaskUpgrading: the instance moves to another datastore version, a
	// rebuild onto its image plus the datastore's upgrade step (Trove's
	// UPGRADE).
	TaskUpgrading Task = "UPGRADING"
)

// Fault is why an instance ended in ERROR (or what last went wrong).
type Fault struct {
	Message string
	Details string
	At      time.Time
}

// Desired is the controller's side of an instance.
type Desired struct {
	ID                 string
	ProjectID          string
	Name               string
	DatastoreVersionID string
	FlavorID           string
	VolumeSizeGB       int
	ConfigurationID    string
	Task               Task
	TaskStartedAt      time.Time
	// Errored makes the status ERROR until reset-status.
	Errored bool
	Fault   *Fault
	// RestartRequired: a configuration change waits for a restart (the
	// agent said so in the change's result).
	RestartRequired bool
	// ServerRestartReason, when set, says why the server must be
	// restarted: it runs with launch settings older than the compute
	// driver's (found when a controller adopted it). The restart action
	// restarts the server then, not just the database.
	ServerRestartReason string
	// ConfigurationApplied is the digest of the configuration set the
	// guest last applied ("" unknown): recovery re-applies the attached
	// group when it differs.
	ConfigurationApplied string
	// TLSFingerprint is what the agent reported at prepare, restore or
	// rebuild: the SHA-256 fingerprint of its datastore's certificate
	// ("" unknown). Kept here, not with the heartbeat: it changes only
	// when the certificate does.
	TLSFingerprint string
	// Volume and Server are the compute driver's handles (JSON it owns).
	Volume json.RawMessage
	Server json.RawMessage
	// Host and Port are where clients reach the database.
	Host string
	Port int
	// Access is Trove's access as asked for at create (nil: not given).
	Access *Access
	// NICs are the network interfaces asked for, as the compute driver
	// resolved them (JSON it owns; empty for instances made before).
	NICs json.RawMessage
	// AvailabilityZone is the zone the create asked for (empty: the
	// compute driver's default).
	AvailabilityZone string
	// Locality is Trove's locality (compute.LocalityAffinity or
	// LocalityAntiAffinity; empty: none), and ServerGroup the key of the
	// server group the instance is in: its own id, or its replication
	// source's group for a replica.
	Locality    string
	ServerGroup string
	// AutoFailoverGrace, on a replication source, is how long after its
	// last heartbeat the controller fails over to a replica by itself;
	// 0: never.
	AutoFailoverGrace time.Duration
	CreatedAt         time.Time
	UpdatedAt         time.Time
	DeletedAt         time.Time
}

// Access is Trove's access: whether the instance should be reachable from
// outside its network, and from where. Stored and shown; what it means is
// the compute driver's business.
type Access struct {
	IsPublic     bool     `json:"is_public"`
	AllowedCIDRs []string `json:"allowed_cidrs"`
}

// Reported is the latest heartbeat an instance's agent sent.
type Reported struct {
	AgentVersion    string
	BootID          string
	Seq             uint64
	Status          wire.DatastoreStatus
	StatusDetail    string
	Volume          *wire.FilesystemStats
	LastCompletedOp string
	SentAt          time.Time
	ReceivedAt      time.Time
	Heartbeats      int64
}

// Instance is both sides, for reading.
type Instance struct {
	Desired
	// Reported is nil until the first heartbeat.
	Reported *Reported
}

// Trove's instance statuses.
const (
	StatusActive          = "ACTIVE"
	StatusBuild           = "BUILD"
	StatusReboot          = "REBOOT"
	StatusResize          = "RESIZE"
	StatusShutdown        = "SHUTDOWN"
	StatusRestartRequired = "RESTART_REQUIRED"
	StatusBlocked         = "BLOCKED"
	StatusError           = "ERROR"
	StatusBackup          = "BACKUP"
	StatusRebuild         = "REBUILD"
	StatusPromote         = "PROMOTE"
	StatusEject           = "EJECT"
	StatusRejoin          = "REJOIN"
	StatusUpgrade         = "UPGRADE"
)

// Status derives the status the API shows and the operating status (the
// database's own health, Trove's operating_status) from desired and
// reported state. A report older than stale counts as no news: the agent
// is gone or cut off.
func Status(d Desired, r *Reported, now time.Time, stale time.Duration) (status, operating string) {
	operating = ""
	fresh := r != nil && now.Sub(r.ReceivedAt) <= stale
	if r != nil {
		operating = operatingStatus(r.Status)
		if !fresh {
			operating = "UNKNOWN"
		}
	}
	if d.Errored {
		return StatusError, operating
	}
	switch d.Task {
	case TaskBuilding:
		return StatusBuild, operating
	case TaskRebooting:
		return StatusReboot, operating
	case TaskResizing:
		return StatusResize, operating
	case TaskDeleting:
		return StatusShutdown, operating
	case TaskBackingUp:
		return StatusBackup, operating
	case TaskRebuilding:
		return StatusRebuild, operating
	case TaskPromoting:
		return StatusPromote, operating
	case TaskEjecting:
		return StatusEject, operating
	case TaskRejoining:
		return StatusRejoin, operating
	case TaskUpgrading:
		return StatusUpgrade, operating
	}
	if !fresh {
		// Trove's UNKNOWN service status shows as ERROR.
		return StatusError, operating
	}
	switch r.Status {
	case wire.StatusRunning, wire.StatusRestartRequired:
		if d.RestartRequired || d.ServerRestartReason != "" || r.Status == wire.StatusRestartRequired {
			return StatusRestartRequired, operating
		}
		return StatusActive, operating
	case wire.StatusNew, wire.StatusBuilding:
		return StatusBuild, operating
	case wire.StatusBlocked:
		return StatusBlocked, operating
	case wire.StatusShutdown, wire.StatusCrashed:
		return StatusShutdown, operating
	default: // failed, unknown, anything newer
		return StatusError, operating
	}
}

func operatingStatus(s wire.DatastoreStatus) string {
	switch s {
	case wire.StatusRunning:
		return "HEALTHY"
	case wire.StatusNew:
		return "NEW"
	case wire.StatusBuilding:
		return "BUILDING"
	case wire.StatusBlocked:
		return "BLOCKED"
	case wire.StatusShutdown:
		return "SHUTDOWN"
	case wire.StatusCrashed:
		return "CRASHED"
	case wire.StatusFailed:
		return "FAILED"
	case wire.StatusRestartRequired:
		return "RESTART_REQUIRED"
	default:
		return "UNKNOWN"
	}
}

// Insert stores a new instance.
func Insert(ctx context.Context, q store.Querier, d Desired) error {
	var access any
	if d.Access != nil {
		data, err := json.Marshal(d.Access)
		if err != nil {
			return err
		}
		access = string(data)
	}
	_, err := q.Exec(ctx, `INSERT INTO instances (id, project_id, name, datastore_version_id, flavor_id, volume_size_gb,
		configuration_id, task, task_started_at, access, nics, availability_zone, locality, server_group, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.ProjectID, d.Name, d.DatastoreVersionID, d.FlavorID, d.VolumeSizeGB, nullString(d.ConfigurationID),
		string(d.Task), nullTime(d.TaskStartedAt), access, nullString(string(d.NICs)), d.AvailabilityZone, d.Locality, d.ServerGroup, store.Millis(d.CreatedAt), store.Millis(d.CreatedAt))
	if err != nil {
		return fmt.Errorf("insert instance %s: %w", d.ID, err)
	}
	return nil
}

const selectInstance = `SELECT i.id, i.project_id, i.name, i.datastore_version_id, i.flavor_id, i.volume_size_gb,
	i.configuration_id, i.task, i.task_started_at, i.errored, i.fault_message, i.fault_details, i.fault_at,
	i.restart_required, i.server_restart_reason, i.configuration_applied, i.tls_fingerprint, i.volume, i.server, i.host, i.port, i.access, i.nics, i.availability_zone, i.locality, i.server_group, i.auto_failover_grace_s, i.created_at, i.updated_at, i.deleted_at,
	r.agent_version, r.boot_id, r.seq, r.status, r.status_detail, r.volume, r.last_completed_op, r.sent_at, r.received_at, r.heartbeats
	FROM instances i LEFT JOIN instance_reports r ON r.instance_id = i.id`

func scan(s store.Scanner) (Instance, error) {
	var in Instance
	d := &in.Desired
	var cfg, faultMsg, faultDet, vol, srv, host, srvRestart, cfgApplied, access, nics sql.NullString
	var taskStarted, faultAt, deleted sql.NullInt64
	var port sql.NullInt64
	var errored, restart, graceS int
	var task string
	var created, updated int64
	var rAgent, rBoot, rStatus, rDetail, rVol, rLast sql.NullString
	var rSeq, rSent, rRecv, rBeats sql.NullInt64
	err := s.Scan(&d.ID, &d.ProjectID, &d.Name, &d.DatastoreVersionID, &d.FlavorID, &d.VolumeSizeGB,
		&cfg, &task, &taskStarted, &errored, &faultMsg, &faultDet, &faultAt,
		&restart, &srvRestart, &cfgApplied, &d.TLSFingerprint, &vol, &srv, &host, &port, &access, &nics, &d.AvailabilityZone, &d.Locality, &d.ServerGroup, &graceS, &created, &updated, &deleted,
		&rAgent, &rBoot, &rSeq, &rStatus, &rDetail, &rVol, &rLast, &rSent, &rRecv, &rBeats)
	if err != nil {
		return in, err
	}
	d.ConfigurationID = cfg.String
	d.AutoFailoverGrace = time.Duration(graceS) * time.Second
	d.Task = Task(task)
	d.TaskStartedAt = store.NullMillis(taskStarted)
	d.Errored, d.RestartRequired = errored != 0, restart != 0
	d.ServerRestartReason, d.ConfigurationApplied = srvRestart.String, cfgApplied.String
	if faultMsg.Valid {
		d.Fault = &Fault{Message: faultMsg.String, Details: faultDet.String, At: store.NullMillis(faultAt)}
	}
	if vol.Valid {
		d.Volume = json.RawMessage(vol.String)
	}
	if srv.Valid {
		d.Server = json.RawMessage(srv.String)
	}
	d.Host, d.Port = host.String, int(port.Int64)
	if access.Valid {
		var a Access
		if err := json.Unmarshal([]byte(access.String), &a); err != nil {
			return in, fmt.Errorf("instance %s: access: %w", d.ID, err)
		}
		d.Access = &a
	}
	if nics.Valid {
		d.NICs = json.RawMessage(nics.String)
	}
	d.CreatedAt, d.UpdatedAt, d.DeletedAt = store.FromMillis(created), store.FromMillis(updated), store.NullMillis(deleted)
	if rBoot.Valid {
		r := &Reported{AgentVersion: rAgent.String, BootID: rBoot.String, Seq: uint64(rSeq.Int64),
			Status: wire.DatastoreStatus(rStatus.String), StatusDetail: rDetail.String, LastCompletedOp: rLast.String,
			SentAt: store.NullMillis(rSent), ReceivedAt: store.NullMillis(rRecv), Heartbeats: rBeats.Int64}
		if rVol.Valid {
			var fs wire.FilesystemStats
			if json.Unmarshal([]byte(rVol.String), &fs) == nil {
				r.Volume = &fs
			}
		}
		in.Reported = r
	}
	return in, nil
}

// Get returns a live (not deleted) instance of project; an empty project
// means any project (the controller's own tasks).
func Get(ctx context.Context, q store.Querier, project, id string) (Instance, error) {
	in, err := scan(q.QueryRow(ctx, selectInstance+` WHERE i.id = ? AND i.deleted_at IS NULL AND (? = '' OR i.project_id = ?)`,
		id, project, project))
	if errors.Is(err, sql.ErrNoRows) {
		return in, fmt.Errorf("instance %q: %w", trunc(id), ErrNotFound)
	}
	return in, err
}

// ListOptions filter List.
type ListOptions struct {
	// Project limits to one project; empty means all.
	Project string
	// ConfigurationID limits to instances with that configuration.
	ConfigurationID string
	// Deleted lists the deleted instances instead of the live ones.
	Deleted bool
}

// List returns live (or, with Deleted, deleted) instances, oldest first.
func List(ctx context.Context, q store.Querier, o ListOptions) ([]Instance, error) {
	live := `i.deleted_at IS NULL`
	if o.Deleted {
		live = `i.deleted_at IS NOT NULL`
	}
	query := selectInstance + ` WHERE ` + live + ` AND (? = '' OR i.project_id = ?) AND (? = '' OR i.configuration_id = ?)`
	query += ` ORDER BY i.created_at, i.id`
	return store.All(ctx, q, scan, query, o.Project, o.Project, o.ConfigurationID, o.ConfigurationID)
}

// Update applies set (column = ? assignments) to a live instance and
// bumps updated_at. Callers pass constant column lists.
func Update(ctx context.Context, q store.Querier, id string, now time.Time, set string, args ...any) error {
	args = append(args, store.Millis(now), id)
	res, err := q.Exec(ctx, `UPDATE instances SET `+set+`, updated_at = ? WHERE id = ? AND deleted_at IS NULL`, args...)
	if err != nil {
		return fmt.Errorf("update instance %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("instance %q: %w", id, ErrNotFound)
	}
	return nil
}

// SetTask records the task in progress (TaskNone: none).
func SetTask(ctx context.Context, q store.Querier, id string, t Task, now time.Time) error {
	var started any
	if t != TaskNone {
		started = store.Millis(now)
	}
	return Update(ctx, q, id, now, `task = ?, task_started_at = ?`, string(t), started)
}

// SetFault records a fault; errored makes the status ERROR.
func SetFault(ctx context.Context, q store.Querier, id string, f Fault, errored bool, now time.Time) error {
	if len(f.Message) > 2000 {
		f.Message = f.Message[:2000]
	}
	if len(f.Details) > 8000 {
		f.Details = f.Details[len(f.Details)-8000:]
	}
	return Update(ctx, q, id, now, `fault_message = ?, fault_details = ?, fault_at = ?, errored = ?`,
		f.Message, f.Details, store.Millis(now), store.Bool(errored))
}

// MarkDeleted hides the instance from every query.
func MarkDeleted(ctx context.Context, q store.Querier, id string, now time.Time) error {
	return Update(ctx, q, id, now, `deleted_at = ?, task = ?, task_started_at = NULL`, store.Millis(now), string(TaskNone))
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return store.Millis(t)
}

func trunc(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}
