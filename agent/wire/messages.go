package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"time"
)

// Protocol names on the SSH connection.
const (
	SSHUser          = "strata-agent"
	RequestHello     = "hello@strata-v1"
	RequestHeartbeat = "heartbeat@strata-v1"
	RequestKeepalive = "keepalive@openssh.com"
	ChannelOperation = "op@strata-v1"
	ChannelStream    = "stream@strata-v1"
)

// ErrorCode classifies a failed operation. The controller maps codes to API
// errors; the message is for humans.
type ErrorCode string

const (
	// CodeInvalidArgument: a name, value or parameter was rejected before
	// anything changed.
	CodeInvalidArgument ErrorCode = "invalid_argument"
	// CodeNotFound: the database, user, log... does not exist.
	CodeNotFound ErrorCode = "not_found"
	// CodeAlreadyExists: the database or user to create exists already.
	CodeAlreadyExists ErrorCode = "already_exists"
	// CodeNotSupported: this datastore does not do this operation (Trove's
	// DatastoreOperationNotSupported).
	CodeNotSupported ErrorCode = "not_supported"
	// CodeFailedPrecondition: the guest is in the wrong state for the
	// operation (not prepared yet, prepared already, database stopped).
	CodeFailedPrecondition ErrorCode = "failed_precondition"
	// CodeUnavailable: the database does not answer.
	CodeUnavailable ErrorCode = "unavailable"
	// CodeInterrupted: the agent started the operation and stopped (crash,
	// reboot) before finishing it. The agent never runs it again on its
	// own: the controller re-runs an idempotent kind (Classes) with a
	// higher Operation.Attempt, and records a fault for any other.
	CodeInterrupted ErrorCode = "interrupted"
	// CodeExpired: the controller gave up on the operation before the
	// agent ran it to the end: not delivered, or not re-run, within the
	// operation's timeout. The controller sets it; an agent never does.
	CodeExpired ErrorCode = "expired"
	// CodeBadMessage: the message could not be read (garbled, oversized,
	// unknown fields); nothing was executed.
	CodeBadMessage ErrorCode = "bad_message"
	// CodeInternal: anything else; the message says what failed.
	CodeInternal ErrorCode = "internal"
)

// OpError is the typed error an operation ends with. It is also the error
// type agent code returns when it wants a specific code on the wire.
type OpError struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
}

func (e *OpError) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf builds an *OpError.
func Errorf(code ErrorCode, format string, args ...any) *OpError {
	return &OpError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCodeOf returns the code of the first *OpError in err's chain, or
// CodeInternal.
func ErrorCodeOf(err error) ErrorCode {
	var oe *OpError
	if errors.As(err, &oe) {
		return oe.Code
	}
	return CodeInternal
}

// Operation is a request from the controller. The controller assigns ID; the
// agent executes an (ID, Attempt) at most once and answers every resend of
// it with the same Result.
type Operation struct {
	ID   string          `json:"id"`
	Kind Kind            `json:"kind"`
	Args json.RawMessage `json:"args,omitempty"`
	// Attempt is 0 for an operation's first run. The controller raises it
	// to run the same operation again after an interrupted (or, for a kind
	// that needs the datastore, unavailable) result of an idempotent kind;
	// the agent then runs it once more, and treats what the cut-short run
	// left behind as done (Class.ExistsIsDone). A higher Attempt never
	// re-runs an operation that succeeded or failed for another reason:
	// the agent answers with the stored result.
	Attempt int `json:"attempt,omitempty"`
}

var (
	opIDPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	kindPattern   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	bootIDPattern = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	digestPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidOpID reports whether id is a well-formed operation id.
func ValidOpID(id string) bool { return opIDPattern.MatchString(id) }

// Validate checks the envelope; the arguments are checked by whoever
// executes the kind.
func (o Operation) Validate() error {
	if !opIDPattern.MatchString(o.ID) {
		return fmt.Errorf("operation id %q: want 1-128 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit", truncate(o.ID, 140))
	}
	if !kindPattern.MatchString(string(o.Kind)) {
		return fmt.Errorf("operation %s: kind %q is not a valid kind name", o.ID, truncate(string(o.Kind), 70))
	}
	if len(o.Args) > 0 && !json.Valid(o.Args) {
		return fmt.Errorf("operation %s: args are not valid JSON", o.ID)
	}
	if o.Attempt < 0 || o.Attempt >= MaxAttempts {
		return fmt.Errorf("operation %s: attempt %d outside 0..%d", o.ID, o.Attempt, MaxAttempts-1)
	}
	return nil
}

// Digest identifies the content of an operation (kind and arguments, not the
// id or attempt), so a resend with the same id but different content is
// recognised.
func (o Operation) Digest() string {
	h := sha256.New()
	io.WriteString(h, string(o.Kind))
	h.Write([]byte{0})
	var buf bytes.Buffer
	if len(o.Args) > 0 && json.Compact(&buf, o.Args) == nil {
		h.Write(buf.Bytes())
	} else {
		h.Write(o.Args)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// AckState tells the controller what the agent did with an operation it
// received.
type AckState string

const (
	// AckAccepted: new operation, queued for execution.
	AckAccepted AckState = "accepted"
	// AckRunning: a resend of an operation that is executing now; its
	// result follows when it finishes.
	AckRunning AckState = "running"
	// AckDone: a resend of a finished operation; its stored result follows.
	AckDone AckState = "done"
	// AckRefused: the id is known with different content; an
	// invalid_argument result follows and nothing runs.
	AckRefused AckState = "refused"
)

// Ack acknowledges receipt of an operation.
type Ack struct {
	OpID  string   `json:"op_id"`
	State AckState `json:"state"`
}

// Result is how an operation ended: Error is nil on success and Payload then
// holds the kind's result type (if it has one).
type Result struct {
	OpID       string          `json:"op_id"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	Error      *OpError        `json:"error,omitempty"`
	StartedAt  time.Time       `json:"started_at,omitzero"`
	FinishedAt time.Time       `json:"finished_at,omitzero"`
	// Attempt is the Operation.Attempt this result is of.
	Attempt int `json:"attempt,omitempty"`
	// Datastore is the datastore's status right after an operation that
	// changes the guest (Class.Mutates), so the controller shows the state
	// the operation left rather than a heartbeat sent before it ended.
	Datastore *StatusResult `json:"datastore,omitempty"`
}

// OK reports whether the operation succeeded.
func (r Result) OK() bool { return r.Error == nil }

// Decode unmarshals a successful result's payload into v.
func (r Result) Decode(v any) error {
	if r.Error != nil {
		return r.Error
	}
	if len(r.Payload) == 0 {
		return fmt.Errorf("operation %s: result has no payload", r.OpID)
	}
	return json.Unmarshal(r.Payload, v)
}

// OpReply is what the agent writes on an operation channel: first a frame
// with Ack, then a frame with Result. A message the agent cannot read gets a
// Result (CodeBadMessage) without an Ack.
type OpReply struct {
	Ack    *Ack    `json:"ack,omitempty"`
	Result *Result `json:"result,omitempty"`
}

// Hello is the agent's first request on a new connection.
type Hello struct {
	// InstanceID is what the agent's bootstrap says. The controller only
	// compares it with the instance the key belongs to and never uses it.
	InstanceID   string `json:"instance_id"`
	AgentVersion string `json:"agent_version"`
	BootID       string `json:"boot_id"`
	// ProtocolVersion is the protocol the agent speaks (ProtocolVersion
	// of its build). Absent: protocol 1 (Protocol).
	ProtocolVersion *int `json:"protocol_version,omitempty"`
}

// Welcome answers Hello.
type Welcome struct {
	InstanceID string    `json:"instance_id"`
	ServerTime time.Time `json:"server_time"`
	// ProtocolVersion is the protocol the controller chose for the
	// session: the agent's. It is absent for a protocol 1 agent, whose
	// strict decoder would refuse the field.
	ProtocolVersion int `json:"protocol_version,omitempty"`
}

// DatastoreStatus uses Trove's service status names.
type DatastoreStatus string

const (
	StatusNew             DatastoreStatus = "new"              // not prepared yet
	StatusBuilding        DatastoreStatus = "building"         // prepare is running
	StatusRunning         DatastoreStatus = "running"          // answers queries
	StatusBlocked         DatastoreStatus = "blocked"          // process up, not answering
	StatusShutdown        DatastoreStatus = "shutdown"         // stopped cleanly
	StatusCrashed         DatastoreStatus = "crashed"          // gone without a clean stop
	StatusFailed          DatastoreStatus = "failed"           // prepare failed or was interrupted
	StatusRestartRequired DatastoreStatus = "restart_required" // running, configuration waits for a restart
	StatusUnknown         DatastoreStatus = "unknown"
)

// FilesystemStats describes the filesystem holding the data volume.
type FilesystemStats struct {
	Path        string `json:"path"`
	TotalBytes  uint64 `json:"total_bytes"`
	UsedBytes   uint64 `json:"used_bytes"`
	FreeBytes   uint64 `json:"free_bytes"` // available to unprivileged users
	TotalInodes uint64 `json:"total_inodes"`
	FreeInodes  uint64 `json:"free_inodes"`
	BlockSize   uint64 `json:"block_size"`
}

// Heartbeat is what the agent reports every heartbeat interval. BootID is
// chosen at random each time the agent process starts; Seq counts from 1
// within one BootID, so a store can drop stale and reordered heartbeats.
type Heartbeat struct {
	AgentVersion    string           `json:"agent_version"`
	BootID          string           `json:"boot_id"`
	Seq             uint64           `json:"seq"`
	SentAt          time.Time        `json:"sent_at"`
	Status          DatastoreStatus  `json:"status"`
	StatusDetail    string           `json:"status_detail,omitempty"`
	Volume          *FilesystemStats `json:"volume,omitempty"`
	LastCompletedOp string           `json:"last_completed_op,omitempty"`
	// Replication is a replica's link, or another server's binary log
	// position (GTIDBinlogPos: its replicas' distance); absent when the
	// datastore has no replication or the server neither.
	Replication *ReplicationStatus `json:"replication,omitempty"`
	// UsersDigest (Redis) is UsersDigest of the users export_users would
	// give now: a replica whose digest differs from its source's is
	// given the source's users again. Sent only in a session whose
	// controller said it takes it (HeartbeatReply): a controller from
	// before the field refuses a heartbeat that carries it.
	UsersDigest string `json:"users_digest,omitempty"`
}

// HeartbeatReply is the payload a controller answers an accepted
// heartbeat with: the optional heartbeat fields it takes. Agents from
// before it ignore the payload; an agent decodes it leniently (a newer
// controller may name more), and sends an optional field only after a
// reply in the same session said the controller takes it.
type HeartbeatReply struct {
	UsersDigest bool `json:"users_digest,omitempty"`
}

// UsersDigest is the digest a heartbeat carries of a server's exported
// users (ExportUsersResult.Users, password hashes included): SHA-256 of
// the lines, sorted, one per line after a version line. It is one-way
// and covers the whole set at once, so it gives nothing to log in with;
// it only tells two servers' sets apart.
func UsersDigest(lines []string) string {
	sorted := append([]string(nil), lines...)
	sort.Strings(sorted)
	h := sha256.New()
	io.WriteString(h, "strata users digest 1\n")
	for _, l := range sorted {
		io.WriteString(h, l)
		io.WriteString(h, "\n")
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Validate checks the fields a store relies on.
func (h Heartbeat) Validate() error {
	if !bootIDPattern.MatchString(h.BootID) {
		return fmt.Errorf("heartbeat: boot_id %q is not 1-64 characters of A-Z a-z 0-9 -", truncate(h.BootID, 70))
	}
	if h.Seq == 0 {
		return errors.New("heartbeat: seq must be at least 1")
	}
	if h.LastCompletedOp != "" && !opIDPattern.MatchString(h.LastCompletedOp) {
		return errors.New("heartbeat: last_completed_op is not a valid operation id")
	}
	if len(h.AgentVersion) > 128 || len(h.StatusDetail) > 1024 || len(h.Status) > 64 {
		return errors.New("heartbeat: agent_version, status or status_detail too long")
	}
	if h.UsersDigest != "" && !digestPattern.MatchString(h.UsersDigest) {
		return errors.New("heartbeat: users_digest is not 64 lowercase hex digits")
	}
	return nil
}

// decodeStrict unmarshals exactly one JSON value into v, rejecting unknown
// fields and trailing data.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// DecodeStrict unmarshals one JSON value into v and fails on unknown fields
// and trailing data. Both sides use it for everything they receive.
func DecodeStrict(data []byte, v any) error { return decodeStrict(data, v) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
