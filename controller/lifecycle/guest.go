package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"strata/agent/wire"
	"strata/controller/instances"
)

// Guest loads a project's instance for a call to its agent: it must be
// ACTIVE or RESTART_REQUIRED (Trove refuses guest calls in other states).
func (m *Manager) Guest(ctx context.Context, project, id string) (instances.Instance, error) {
	in, err := m.get(ctx, m.DB, project, id)
	if err != nil {
		return in, err
	}
	status, _ := m.Status(in)
	if err := requireStatus(in, status, "reach the database of", instances.StatusActive, instances.StatusRestartRequired); err != nil {
		return in, err
	}
	return in, nil
}

// Call runs one operation on the instance's agent and waits for its
// result (GuestCallTimeout). ErrGuestTimeout means it is still queued and
// will run when the agent gets to it.
func (m *Manager) Call(ctx context.Context, in instances.Instance, kind wire.Kind, args any) (wire.Result, error) {
	op := wire.Operation{ID: string(kind) + "-" + randomID(), Kind: kind}
	if args != nil {
		data, err := json.Marshal(args)
		if err != nil {
			return wire.Result{}, err
		}
		op.Args = data
	}
	timeout := m.GuestCallTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	res, err := m.Agents.Call(ctx, in.ID, op, timeout)
	if err == nil && kind == wire.KindEnableRoot {
		// The root password goes to the caller and nowhere else.
		if ferr := m.Agents.ForgetPayload(context.WithoutCancel(ctx), in.ID, op.ID); ferr != nil {
			m.log().Error("could not drop the stored root password", "instance", in.ID, "err", ferr)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return res, wrap(ErrGuestTimeout, "instance %s did not answer %s within %s; the operation stays queued", in.ID, kind, timeout)
	}
	return res, err
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
